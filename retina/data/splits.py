"""Patient-level splits of a manifest: every patient in exactly one split, stratified by
the patient's worst grade; k-fold cross-validation folds of the patients outside the test
split; and a one-line summary per split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.errors import ConfigError, DataError
from retina.icdr import NUM_GRADES

SPLITS = ("train", "val", "test")
FOLD_COLUMN = "fold"


def split_by_patient(
    manifest: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """Assigns every patient to one split, stratified by the patient's worst grade."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise DataError(
            "data.val_fraction and data.test_fraction must be >= 0 with a sum of at most 1 "
            "(1: every scan held out, as for an external test set)."
        )
    shares = np.array([1 - val_fraction - test_fraction, val_fraction, test_fraction])
    dealt = deal_patients(manifest, shares, seed)
    return manifest["patient"].map({patient: SPLITS[i] for patient, i in dealt.items()})


def deal_patients(manifest: pd.DataFrame, shares: np.ndarray, seed: int) -> pd.Series:
    """The share index each patient is dealt to, stratified by the patient's worst grade.

    Patients are ordered by stratum (random within it) and dealt to whichever share is
    furthest below its target so far, so each stratum is spread in proportion even when it
    holds only a few patients (with equal shares: within one patient of the ideal).
    """
    worst = manifest.groupby("patient")["grade"].max()
    rng = np.random.default_rng(seed)
    order = worst.index[np.lexsort((rng.random(len(worst)), worst.to_numpy()))]
    counts = np.zeros(len(shares))
    dealt = np.empty(len(order), dtype=int)
    for position in range(len(order)):
        dealt[position] = int(np.argmax(shares * (position + 1) - counts))
        counts[dealt[position]] += 1
    return pd.Series(dealt, index=order)


def assign_folds(manifest: pd.DataFrame, folds: int, fold: int, seed: int) -> pd.DataFrame:
    """``data.folds=K``, ``data.fold=i``: the patients outside the test split dealt into K
    stratified folds (the ``fold`` column); fold i is the validation split, the other folds
    train, and the test split stays exactly as it was."""
    if folds < 2 or not 0 <= fold < folds:
        raise ConfigError(
            f"data.folds={folds} and data.fold={fold}: cross-validation needs data.folds >= 2 "
            f"and 0 <= data.fold < data.folds (e.g. -m data.folds=5 'data.fold=range(5)')."
        )
    development = manifest[manifest["split"] != "test"]
    if development["patient"].nunique() < folds:
        raise DataError(
            f"data.folds={folds}: only {development['patient'].nunique()} patients outside "
            "the test split; use fewer folds."
        )
    dealt = deal_patients(development, np.full(folds, 1 / folds), seed)
    fold_of_row = development["patient"].map(dealt)
    manifest = manifest.copy()
    manifest[FOLD_COLUMN] = fold_of_row.astype("Int64")  # <NA> for the test split
    manifest.loc[fold_of_row.index, "split"] = np.where(fold_of_row == fold, "val", "train")
    return manifest


def manifest_summary(manifest: pd.DataFrame) -> str:
    """One line per split: scans, patients and the grade histogram."""
    lines = []
    for split in SPLITS:
        part = manifest[manifest["split"] == split]
        histogram = np.bincount(part["grade"], minlength=NUM_GRADES).tolist()
        lines.append(
            f"{split:>5}: {len(part)} scans, {part['patient'].nunique()} patients, "
            f"grades 0-4 {histogram}"
        )
    if FOLD_COLUMN in manifest:
        validation = manifest.loc[manifest["split"] == "val", FOLD_COLUMN].iloc[0]
        folds = manifest[FOLD_COLUMN].nunique()
        lines.append(f"validation is fold {validation} of {folds} (data.fold, data.folds)")
    return "\n".join(lines)

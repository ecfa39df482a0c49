"""Patient-level splits of a manifest: every patient in exactly one split, stratified by
the patient's worst grade, and a one-line summary per split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.errors import DataError
from retina.icdr import NUM_GRADES

SPLITS = ("train", "val", "test")


def split_by_patient(
    manifest: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """Assigns every patient to one split, stratified by the patient's worst grade.

    Patients are ordered by stratum (random within it) and dealt to whichever split is
    furthest below its target share so far, so each stratum is spread in proportion even
    when it holds only a few patients.
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise DataError(
            "data.val_fraction and data.test_fraction must be >= 0 with a sum of at most 1 "
            "(1: every scan held out, as for an external test set)."
        )
    shares = np.array([1 - val_fraction - test_fraction, val_fraction, test_fraction])
    worst = manifest.groupby("patient")["grade"].max()
    rng = np.random.default_rng(seed)
    order = worst.index[np.lexsort((rng.random(len(worst)), worst.to_numpy()))]
    counts = np.zeros(3)
    assignment = {}
    for position, patient in enumerate(order):
        choice = int(np.argmax(shares * (position + 1) - counts))
        counts[choice] += 1
        assignment[patient] = SPLITS[choice]
    return manifest["patient"].map(assignment)


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
    return "\n".join(lines)

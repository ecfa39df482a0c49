"""The scans the graders found ungradable: left out of the manifest (they carry no grade to
learn or score), but listed with a split of their own, so the quality gate can learn the
graders' gradable label on the training split and be measured against it on the test split.

A scan keeps its patient's split when the patient has a graded scan in the manifest (both
eyes of a patient stay together); the patients none of whose scans could be graded are
dealt into the splits with the manifest's shares and seed. The manifest's own split is
never changed by them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from retina.config import DataConfig
from retina.data.privacy import pseudonymises, scan_pseudonym
from retina.data.sources import (
    LABELS_FILE,
    _extra_columns,
    _find_image,
    _read_table,
    _scans,
    _site_rows,
)
from retina.data.splits import SPLITS, deal_patients

GRADABLE_COLUMN = "gradable"  # the label table's column: 0 where the graders could not grade
# The layouts whose label table can say so (the synthetic set is written in APTOS's).
LAYOUTS_WITH_GRADABILITY = ("synthetic", "aptos2019")


def ungradable_scans(cfg: DataConfig, manifest: pd.DataFrame) -> pd.DataFrame:
    """The label table's ungradable scans as manifest rows (their grade is the graders'
    reading, for reference only), each with a split; empty when the layout or its table has
    no gradable column."""
    if cfg.layout not in LAYOUTS_WITH_GRADABILITY:
        return manifest.iloc[:0].copy()
    root = Path(cfg.root)
    labels_path = root / LABELS_FILE
    table = _site_rows(
        _read_table(labels_path, ["id_code", "diagnosis"], "train.csv"), cfg, labels_path
    )
    if GRADABLE_COLUMN not in table:
        return manifest.iloc[:0].copy()
    table = table[table[GRADABLE_COLUMN].str.strip() == "0"].reset_index(drop=True)
    patients = table["patient_id"] if "patient_id" in table else table["id_code"]
    rows, _ = _scans(
        cfg,
        labels_path,
        table["id_code"],
        table["id_code"],
        lambda i: _find_image(root, root / "train_images", i),
        table["diagnosis"],
        patients,
        table["eye"] if "eye" in table else [""] * len(table),
        extra=_extra_columns(table, cfg, labels_path),
    )
    if pseudonymises(cfg):
        rows["scan_id"] = [scan_pseudonym(path, cfg.id_salt) for path in rows["path"]]
    rows["split"] = _splits(rows, manifest, cfg)
    return rows


def _splits(rows: pd.DataFrame, manifest: pd.DataFrame, cfg: DataConfig) -> pd.Series:
    """Each row's patient's split in the manifest; the other patients dealt anew."""
    known = manifest.drop_duplicates("patient").set_index("patient")["split"]
    splits = rows["patient"].map(known)
    alone = rows[splits.isna()]
    if len(alone):
        shares = np.array(
            [1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction]
        )
        dealt = deal_patients(alone, shares, cfg.split_seed)
        splits[splits.isna()] = alone["patient"].map(lambda p: SPLITS[dealt[p]])
    return splits.astype(str)

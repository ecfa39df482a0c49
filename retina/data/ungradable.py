"""The scans the graders found ungradable: left out of the manifest (they carry no grade to
learn or score), but listed with a split of their own, so the quality gate can learn the
graders' gradable label on the training split and be measured against it on the test split.

A scan keeps its patient's split when the patient has a graded scan in the manifest (both
eyes of a patient stay together); the patients none of whose scans could be graded are
dealt into the splits with the manifest's shares and seed. The manifest's own split is
never changed by them.

The layouts that say which scans are ungradable: the built-in set and APTOS's layout (a
``gradable`` column of 0), Messidor-2 (``adjudicated_gradable`` 0, Krause et al. 2018; no
grade given: ``NO_GRADE``) and the folder layout (``data.gradable_column`` 0). A split
the layout gives (the folder layout's split column or test CSV) wins, as in the manifest.
"""

from __future__ import annotations

import pandas as pd

from retina.config import DataConfig
from retina.data.label_tables import parse_grade
from retina.data.privacy import pseudonymises, scan_pseudonym
from retina.data.sources import (
    aptos_scans,
    aptos_table,
    folder_scans,
    folder_tables,
    messidor2_scans,
    messidor2_table,
)
from retina.data.splits import split_by_patient

NO_GRADE = -1  # an ungradable scan's grade where its table gives none


def ungradable_scans(cfg: DataConfig, manifest: pd.DataFrame) -> pd.DataFrame:
    """The label table's ungradable scans as manifest rows (their grade is the graders'
    reading, for reference only, or ``NO_GRADE``), each with a split; empty when the
    layout or its table cannot say which scans are ungradable."""
    reader = UNGRADABLE_READERS.get(cfg.layout)
    rows = reader(cfg) if reader else None
    if rows is None or rows.empty:
        return manifest.iloc[:0].copy()
    if pseudonymises(cfg):
        rows["scan_id"] = [scan_pseudonym(path, cfg.id_salt) for path in rows["path"]]
    rows["split"] = _splits(rows, manifest, cfg)
    return rows


def _grade_or_none(value: str) -> int:
    """The table's grade, ``NO_GRADE`` where it gives none."""
    return NO_GRADE if str(value).strip() == "" else parse_grade(value)


def _messidor2_ungradable(cfg: DataConfig) -> pd.DataFrame:
    labels_path, table, ungradable = messidor2_table(cfg)
    table = table[ungradable].reset_index(drop=True)
    return messidor2_scans(cfg, labels_path, table, grade_of=_grade_or_none)[0]


def _folder_ungradable(cfg: DataConfig) -> pd.DataFrame:
    parts = [
        folder_scans(cfg, path, table[ungradable], split, grade_of=_grade_or_none)[0]
        for path, table, ungradable, split in folder_tables(cfg)
    ]
    return pd.concat(parts, ignore_index=True)


def _aptos_ungradable(cfg: DataConfig) -> pd.DataFrame:
    labels_path, table, ungradable = aptos_table(cfg)
    return aptos_scans(cfg, labels_path, table[ungradable], grade_of=_grade_or_none)[0]


# The layouts whose label table says which scans are ungradable (the built-in set is
# written in APTOS's).
UNGRADABLE_READERS = {
    "synthetic": _aptos_ungradable,
    "aptos2019": _aptos_ungradable,
    "messidor2": _messidor2_ungradable,
    "folder": _folder_ungradable,
}


def _splits(rows: pd.DataFrame, manifest: pd.DataFrame, cfg: DataConfig) -> pd.Series:
    """The split the layout gives a row (val or test, as in the manifest), else its
    patient's split in the manifest; the other patients dealt anew."""
    known = manifest.drop_duplicates("patient").set_index("patient")["split"]
    given = rows["split"].where(rows["split"].isin(["val", "test"]))
    splits = given.fillna(rows["patient"].map(known))
    alone = splits.isna()
    if alone.any():
        splits[alone] = split_by_patient(
            rows[alone], cfg.val_fraction, cfg.test_fraction, cfg.split_seed
        )
    return splits.astype(str)

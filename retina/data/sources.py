"""Dataset layouts on disk -> one manifest table, and patient-level splits.

The manifest has one row per scan with the columns in ``MANIFEST_COLUMNS``. Paths are
relative to the data root; patients are pseudonymised with a salted hash, so the run
directory never holds the patient identifiers of the label table.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from retina.config import DataConfig
from retina.data.synthetic import LABELS_FILE
from retina.errors import DataError

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["scan_id", "path", "grade", "patient", "eye", "split"]
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")
NUM_GRADES = 5


def pseudonymise(value: str, salt: str) -> str:
    """A stable, salted, one-way key for a patient identifier."""
    return "pt-" + hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:12]


def build_manifest(cfg: DataConfig) -> pd.DataFrame:
    """Reads the layout named by ``cfg.layout`` under ``cfg.root`` and splits it by patient."""
    # The synthetic set is written in the APTOS layout (see retina.data.prepare).
    readers = {"synthetic": _read_aptos2019, "aptos2019": _read_aptos2019}
    if cfg.layout not in readers:
        raise DataError(f"data.layout={cfg.layout!r} is not known; use one of {sorted(readers)}.")
    manifest = readers[cfg.layout](cfg)
    manifest["split"] = split_by_patient(
        manifest, cfg.val_fraction, cfg.test_fraction, cfg.split_seed
    )
    return manifest[MANIFEST_COLUMNS]


def _read_aptos2019(cfg: DataConfig) -> pd.DataFrame:
    """APTOS 2019: ``train.csv`` (id_code, diagnosis[, patient_id, eye]) + ``train_images/``."""
    root = Path(cfg.root)
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        raise DataError(f"{labels_path} not found: data.root must hold the APTOS train.csv.")
    # Strings first: ids such as "00123" or "NA" must survive as written.
    table = pd.read_csv(labels_path, dtype=str, keep_default_na=False)
    _require_columns(table, ["id_code", "diagnosis"], labels_path)
    patients = table["patient_id"] if "patient_id" in table else table["id_code"]
    return pd.DataFrame(
        {
            "scan_id": table["id_code"],
            "path": [_find_image(root / "train_images", i, labels_path) for i in table["id_code"]],
            "grade": _parse_grades(table["diagnosis"], labels_path),
            "patient": [pseudonymise(p, cfg.id_salt) for p in patients],
            "eye": table["eye"] if "eye" in table else "",
        }
    )


def _require_columns(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {missing}; it has {list(table.columns)}.")


def _find_image(folder: Path, scan_id: str, labels_path: Path) -> str:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{scan_id}{suffix}"
        if candidate.is_file():
            return str(candidate.relative_to(folder.parent))
    raise DataError(
        f"{labels_path} lists {scan_id!r} but no image {folder}/{scan_id}.* exists "
        f"(looked for {', '.join(IMAGE_SUFFIXES)})."
    )


def _parse_grades(values: pd.Series, labels_path: Path) -> np.ndarray:
    grades = pd.to_numeric(values, errors="coerce")
    bad = grades.isna() | ~grades.isin(range(NUM_GRADES))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{labels_path} row {row + 2}: grade {values.iloc[row]!r} is not one of "
            f"0..{NUM_GRADES - 1}."
        )
    return grades.astype(int).to_numpy()


def split_by_patient(
    manifest: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """Assigns every patient to one split, stratified by the patient's worst grade.

    Patients are ordered by stratum (random within it) and dealt to whichever split is
    furthest below its target share so far, so each stratum is spread in proportion even
    when it holds only a few patients.
    """
    if not 0 <= val_fraction + test_fraction < 1:
        raise DataError("data.val_fraction + data.test_fraction must be in [0, 1).")
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

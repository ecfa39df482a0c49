"""Dataset layouts on disk -> one manifest table, and patient-level splits.

The manifest has one row per scan with the columns in ``MANIFEST_COLUMNS``. Paths are
relative to the data root; patients are pseudonymised with a salted hash, so the run
directory never holds the patient identifiers of the label table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from retina.config import DataConfig
from retina.data.label_tables import (
    MANIFEST_COLUMNS,
    OPTIONAL_COLUMNS,
    TRAIN_GRADE,
    confined_path,
    extra_columns,
    find_image,
    read_table,
    require_columns,
    site_rows,
    table_scans,
)
from retina.data.privacy import pseudonymises, scan_pseudonym
from retina.data.splits import FOLD_COLUMN, SPLITS, assign_folds, split_by_patient
from retina.data.synthetic import LABELS_FILE
from retina.errors import DataError

log = logging.getLogger(__name__)


def build_manifest(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Reads the layout named by ``cfg.layout`` under ``cfg.root`` and splits it by patient.

    A split the layout itself gives (IDRiD's test set, the ``folder`` layout's split
    column) wins: those scans keep it, and only the rest is dealt by patient.

    Returns:
        The manifest of usable scans, and one record (path, table, row, reason) for every
        row left out: missing file, unknown label, duplicate, path outside data.root.
    """
    if cfg.layout not in LAYOUTS:
        raise DataError(f"data.layout={cfg.layout!r} is not known; use one of {sorted(LAYOUTS)}.")
    if not Path(cfg.root).is_dir():
        raise DataError(
            f"data.root={cfg.root} is not a folder; point it at the folder that holds the "
            f"{cfg.layout} data (python -m retina.train data={cfg.layout} data.root=<folder>)."
        )
    manifest, problems = LAYOUTS[cfg.layout](cfg)
    if pseudonymises(cfg):  # the folder names may name patients: ids from the paths instead
        manifest["scan_id"] = [scan_pseudonym(path, cfg.id_salt) for path in manifest["path"]]
    if manifest.empty:
        raise DataError(f"no usable scan under {cfg.root} ({len(problems)} rows with problems).")
    given = manifest["split"]
    unknown = sorted(set(given) - {"", *SPLITS})
    if unknown:
        raise DataError(f"split values {unknown} are not one of {SPLITS} (or empty).")
    fixed = given.isin(["val", "test"])
    rest = manifest[~fixed]
    val = 0.0 if (given == "val").any() else cfg.val_fraction
    test = 0.0 if (given == "test").any() else cfg.test_fraction
    manifest["split"] = given
    manifest.loc[~fixed, "split"] = split_by_patient(rest, val, test, cfg.split_seed)
    if cfg.folds:
        manifest = assign_folds(manifest, cfg.folds, cfg.fold, cfg.split_seed)
    return manifest[manifest_columns(manifest)], problems


def manifest_columns(manifest: pd.DataFrame) -> list[str]:
    return [*MANIFEST_COLUMNS, *(c for c in [*OPTIONAL_COLUMNS, FOLD_COLUMN] if c in manifest)]


def training_grades(rows: pd.DataFrame) -> pd.Series:
    """The grades training learns from: ``data.train_label``'s, else the reference grade."""
    return rows[TRAIN_GRADE] if TRAIN_GRADE in rows else rows["grade"]


GRADABLE_COLUMN = "gradable"  # APTOS's layout (the built-in set): 0 where graders could not grade


def aptos_table(cfg: DataConfig) -> tuple[Path, pd.DataFrame, pd.Series]:
    """(path, rows of ``data.sites``, ungradable) of APTOS's ``train.csv``; none ungradable
    without a ``gradable`` column."""
    labels_path = Path(cfg.root) / LABELS_FILE
    table = read_table(labels_path, ["id_code", "diagnosis"], "the APTOS train.csv")
    table = site_rows(table, cfg, labels_path)
    if GRADABLE_COLUMN not in table:
        return labels_path, table, pd.Series(False, index=table.index)
    return labels_path, table, table[GRADABLE_COLUMN].str.strip() == "0"


def aptos_scans(
    cfg: DataConfig, labels_path: Path, table: pd.DataFrame, grade_of=None
) -> tuple[pd.DataFrame, list[dict]]:
    """``table_scans`` of APTOS rows: ``train_images/<id_code>.*``."""
    root = Path(cfg.root)
    table = table.reset_index(drop=True)
    patients = table["patient_id"] if "patient_id" in table else table["id_code"]
    folder = root / "train_images"
    eyes = table["eye"] if "eye" in table else [""] * len(table)
    return table_scans(
        cfg,
        labels_path,
        table["id_code"],
        table["id_code"],
        lambda i: find_image(root, folder, i),
        table["diagnosis"],
        patients,
        eyes,
        extra=extra_columns(table, cfg, labels_path),
        grade_of=grade_of,
    )


def _read_aptos2019(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """APTOS 2019: ``train.csv`` (id_code, diagnosis[, patient_id, eye, gradable]) +
    ``train_images/``. Scans the graders could not grade (``gradable`` 0) are left out, with
    a log line (the quality gate learns them: ``retina.data.ungradable``)."""
    labels_path, table, ungradable = aptos_table(cfg)
    if ungradable.any():
        log.info("Leaving out %d scans the graders found ungradable.", ungradable.sum())
    return aptos_scans(cfg, labels_path, table[~ungradable])


def _read_eyepacs(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Kaggle DR 2015 (EyePACS): ``trainLabels.csv`` (image, level) + ``train/<image>.jpeg``.

    Names are ``<patient>_<left|right>``: both eyes of a patient stay in one split.
    """
    root = Path(cfg.root)
    labels_path = root / "trainLabels.csv"
    table = read_table(labels_path, ["image", "level"], "the EyePACS trainLabels.csv")
    folder = root / "train" if (root / "train").is_dir() else root
    patients = [name.rsplit("_", 1)[0] for name in table["image"]]
    eyes = [{"left": "L", "right": "R"}.get(n.rsplit("_", 1)[-1], "") for n in table["image"]]
    return table_scans(
        cfg,
        labels_path,
        table["image"],
        table["image"],
        lambda i: find_image(root, folder, i),
        table["level"],
        patients,
        eyes,
    )


MESSIDOR2_LABELS = "messidor_data.csv"


def messidor2_table(cfg: DataConfig) -> tuple[Path, pd.DataFrame, pd.Series]:
    """(path, rows, adjudicated ungradable) of Messidor-2's ``messidor_data.csv``."""
    labels_path = Path(cfg.root) / MESSIDOR2_LABELS
    columns = ["image_id", "adjudicated_dr_grade", "adjudicated_gradable"]
    table = read_table(labels_path, columns, f"the Messidor-2 {MESSIDOR2_LABELS}")
    return labels_path, table, table["adjudicated_gradable"].str.strip() == "0"


def messidor2_scans(
    cfg: DataConfig, labels_path: Path, table: pd.DataFrame, grade_of=None
) -> tuple[pd.DataFrame, list[dict]]:
    """``table_scans`` of Messidor-2 rows: ``IMAGES/<image_id>``, one patient per image."""
    root = Path(cfg.root)
    folder = root / (cfg.image_dir or "IMAGES")
    ids = [Path(i).stem for i in table["image_id"]]
    return table_scans(
        cfg,
        labels_path,
        ids,
        table["image_id"],
        lambda i: find_image(root, folder, i),
        table["adjudicated_dr_grade"],
        ids,
        [""] * len(ids),
        grade_of=grade_of,
    )


def _read_messidor2(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Messidor-2 with the adjudicated grades (Krause et al. 2018): ``messidor_data.csv``
    (image_id, adjudicated_dr_grade, adjudicated_gradable) + ``IMAGES/<image_id>``.
    Scans adjudicated ungradable carry no grade and are left out, with a log line (the
    quality gate learns them: ``retina.data.ungradable``)."""
    labels_path, table, ungradable = messidor2_table(cfg)
    if ungradable.any():
        log.info("Messidor-2: leaving out %d scans adjudicated ungradable.", ungradable.sum())
    return messidor2_scans(cfg, labels_path, table[~ungradable].reset_index(drop=True))


IDRID_PARTS = {
    "train": ("a. IDRiD_Disease Grading_Training Labels.csv", "a. Training Set"),
    "test": ("b. IDRiD_Disease Grading_Testing Labels.csv", "b. Testing Set"),
}


def _read_idrid(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """IDRiD, B. Disease Grading, as published: ``2. Groundtruths/<a|b>. ... Labels.csv``
    ("Image name", "Retinopathy grade") + ``1. Original Images/<a|b>. ... Set/<name>.jpg``.
    The published test set is the test split."""
    root = Path(cfg.root)
    parts = []
    for split, (labels_name, images_name) in IDRID_PARTS.items():
        labels_path = root / "2. Groundtruths" / labels_name
        if split == "test" and not labels_path.exists():
            continue
        table = read_table(labels_path, ["Image name", "Retinopathy grade"], "IDRiD labels")
        table = table[table["Image name"].str.strip() != ""]
        folder = root / "1. Original Images" / images_name
        names = table["Image name"].str.strip()
        # Both sets number their images from IDRiD_001: the set's name keeps them apart.
        ids = [f"{split}-{n}" for n in names]
        given = ["" if split == "train" else "test"] * len(names)
        parts.append(
            table_scans(
                cfg,
                labels_path,
                ids,
                names,
                lambda n, f=folder: find_image(root, f, n),
                table["Retinopathy grade"],
                ids,
                [""] * len(ids),
                given,
            )
        )
    frames, problems = zip(*parts, strict=True)
    return pd.concat(frames, ignore_index=True), [p for found in problems for p in found]


def _read_folder(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Any CSV: ``data.labels_csv`` with ``data.path_column`` (relative to data.root) and
    ``data.label_column``; ``data.patient_column``, ``data.eye_column``,
    ``data.split_column`` and ``data.gradable_column`` (0: ungradable, left out here) are
    optional. ``data.test_labels_csv``, a second CSV with the same columns, is the test
    split."""
    parts = []
    for labels_path, table, ungradable, split in folder_tables(cfg):
        if ungradable.any():
            left_out = int(ungradable.sum())
            log.info("%s: leaving out %d scans graded ungradable.", labels_path.name, left_out)
        parts.append(folder_scans(cfg, labels_path, table[~ungradable], split))
    frames, problems = zip(*parts, strict=True)
    return pd.concat(frames, ignore_index=True), [p for found in problems for p in found]


def folder_tables(cfg: DataConfig) -> list[tuple[Path, pd.DataFrame, pd.Series, str | None]]:
    """(path, rows, ungradable, the split it forces) of the folder layout's CSVs."""
    if not cfg.labels_csv:
        raise DataError("data=folder needs data.labels_csv (a CSV relative to data.root).")
    named = [(cfg.labels_csv, None)]
    if cfg.test_labels_csv:
        named.append((cfg.test_labels_csv, "test"))
    hint = "name its columns with data.path_column, data.label_column (and data.patient_column)"
    tables = []
    for csv_name, forced_split in named:
        labels_path = Path(cfg.root) / csv_name
        table = read_table(labels_path, [cfg.path_column, cfg.label_column], csv_name, hint)
        optional = [cfg.patient_column, cfg.eye_column, cfg.split_column, cfg.gradable_column]
        require_columns(table, [c for c in optional if c], labels_path, hint)
        ungradable = pd.Series(False, index=table.index)
        if cfg.gradable_column:
            ungradable = table[cfg.gradable_column].str.strip() == "0"
        tables.append((labels_path, table, ungradable, forced_split))
    return tables


def folder_scans(
    cfg: DataConfig, labels_path: Path, table: pd.DataFrame, forced_split, grade_of=None
) -> tuple[pd.DataFrame, list[dict]]:
    """``table_scans`` of the folder layout's rows."""
    table = table.reset_index(drop=True)
    refs = table[cfg.path_column]
    patients = table[cfg.patient_column] if cfg.patient_column else refs
    eyes = table[cfg.eye_column] if cfg.eye_column else [""] * len(table)
    if forced_split:
        split = [forced_split] * len(table)
    elif cfg.split_column:
        split = table[cfg.split_column].str.strip().str.lower().tolist()
    else:
        split = None
    ids = [Path(p).stem for p in refs]
    locate = lambda p: confined_path(Path(cfg.root), p)  # noqa: E731
    grades = table[cfg.label_column]
    return table_scans(
        cfg, labels_path, ids, refs, locate, grades, patients, eyes, split, grade_of=grade_of
    )


LAYOUTS = {
    "synthetic": _read_aptos2019,  # generated in the APTOS layout (see retina.data.prepare)
    "aptos2019": _read_aptos2019,
    "eyepacs": _read_eyepacs,
    "messidor2": _read_messidor2,
    "idrid": _read_idrid,
    "folder": _read_folder,
}

"""Dataset layouts on disk -> one manifest table, and patient-level splits.

The manifest has one row per scan with the columns in ``MANIFEST_COLUMNS``. Paths are
relative to the data root; patients are pseudonymised with a salted hash, so the run
directory never holds the patient identifiers of the label table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from retina.config import DataConfig, TrainLabel
from retina.data.privacy import pseudonymises, scan_pseudonym
from retina.data.splits import FOLD_COLUMN, SPLITS, assign_folds, split_by_patient
from retina.data.synthetic import LABELS_FILE
from retina.errors import DataError
from retina.files import text_sha256
from retina.icdr import NUM_GRADES

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["scan_id", "path", "grade", "patient", "eye", "split"]
# Carried into the manifest when the label table has them (never identifying): the label
# training learns from where it is not the reference grade, and facts for subgroup results.
TRAIN_GRADE = "train_grade"
PATIENT_FACTS = ["site", "age", "sex", "diabetes_years"]
OPTIONAL_COLUMNS = [TRAIN_GRADE, *PATIENT_FACTS]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")


def pseudonymise(value: str, salt: str) -> str:
    """A stable, salted, one-way key for a patient identifier."""
    return "pt-" + text_sha256(f"{salt}:{value}")[:12]


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


def _read_table(path: Path, columns: list[str], what: str, hint: str = "") -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found: data.root must hold {what}.")
    # Strings first: ids such as "00123" or "NA" must survive as written.
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    _require_columns(table, columns, path, hint)
    return table


class RowProblem(Exception):
    """One scan that cannot be used; reported in bad_inputs.csv, never fatal on its own."""


def _scans(
    cfg: DataConfig,
    labels_path: Path,
    ids,
    refs,
    locate,
    grades,
    patients,
    eyes,
    split=None,
    extra: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """The usable manifest rows of one label table, and a problem record for every other.

    Args:
        ids, grades, patients, eyes, split: one value per row of the table.
        refs: what the table says about each scan's file (an id or a path).
        locate: maps a ref to the image's path relative to data.root, or raises
            RowProblem.
        extra: ``OPTIONAL_COLUMNS`` the table has, one row per table row.
    """
    extra = pd.DataFrame(index=range(len(ids))) if extra is None else extra
    rows, problems, seen = [], [], {}
    for index, (scan_id, ref, grade, patient, eye, given, more) in enumerate(
        zip(
            ids,
            refs,
            grades,
            patients,
            eyes,
            split or [""] * len(ids),
            extra.to_dict("records"),
            strict=True,
        )
    ):
        where = {"path": str(ref), "table": labels_path.name, "row": index + 2}
        try:
            path = locate(ref)
            grade = _parse_grade(grade)
            if TRAIN_GRADE in more:
                more[TRAIN_GRADE] = _parse_grade(more[TRAIN_GRADE])
            if path in seen:
                raise RowProblem(f"duplicate of row {seen[path]} (same file)")
        except RowProblem as problem:
            problems.append({**where, "reason": str(problem)})
            continue
        seen[path] = index + 2
        rows.append(
            {
                "scan_id": scan_id,
                "path": path,
                "grade": grade,
                "patient": pseudonymise(patient, cfg.id_salt),
                "eye": eye,
                "split": given,
                **more,
            }
        )
    frame = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *extra.columns])
    return frame.astype({"grade": int}), problems


def _parse_grade(value: str) -> int:
    text = str(value).strip()
    if text not in {str(g) for g in range(NUM_GRADES)}:
        raise RowProblem(f"unknown label {value!r} (grades are 0..{NUM_GRADES - 1})")
    return int(text)


def _read_aptos2019(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """APTOS 2019: ``train.csv`` (id_code, diagnosis[, patient_id, eye]) + ``train_images/``."""
    root = Path(cfg.root)
    labels_path = root / LABELS_FILE
    table = _read_table(labels_path, ["id_code", "diagnosis"], "the APTOS train.csv")
    table = _graded_rows(_site_rows(table, cfg, labels_path))
    patients = table["patient_id"] if "patient_id" in table else table["id_code"]
    folder = root / "train_images"
    eyes = table["eye"] if "eye" in table else [""] * len(table)
    return _scans(
        cfg,
        labels_path,
        table["id_code"],
        table["id_code"],
        lambda i: _find_image(root, folder, i),
        table["diagnosis"],
        patients,
        eyes,
        extra=_extra_columns(table, cfg, labels_path),
    )


def _site_rows(table: pd.DataFrame, cfg: DataConfig, path: Path) -> pd.DataFrame:
    """The rows of the sites ``data.sites`` names (all rows when it names none)."""
    if not cfg.sites:
        return table
    _require_columns(table, ["site"], path, "data.sites needs a site column; set data.sites=[]")
    unknown = sorted(set(cfg.sites) - set(table["site"]))
    if unknown:
        raise DataError(
            f"data.sites names {unknown}, which {path} does not have; its sites are "
            f"{sorted(set(table['site']))}."
        )
    return table[table["site"].isin(cfg.sites)].reset_index(drop=True)


def _graded_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Leaves out the scans the graders could not grade (a ``gradable`` column of 0)."""
    if "gradable" not in table:
        return table
    ungradable = table["gradable"].str.strip() == "0"
    if ungradable.any():
        log.info("Leaving out %d scans the graders found ungradable.", ungradable.sum())
    return table[~ungradable].reset_index(drop=True)


def _extra_columns(table: pd.DataFrame, cfg: DataConfig, path: Path) -> pd.DataFrame:
    """The patient facts the table has, and the training label when it is not the
    reference grade."""
    extra = table[[c for c in PATIENT_FACTS if c in table]].copy()
    if cfg.train_label != TrainLabel.adjudicated:
        _require_columns(
            table,
            [cfg.train_label],
            path,
            "data.train_label other than adjudicated needs the graders' columns",
        )
        extra[TRAIN_GRADE] = table[cfg.train_label]
    return extra


def _read_eyepacs(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Kaggle DR 2015 (EyePACS): ``trainLabels.csv`` (image, level) + ``train/<image>.jpeg``.

    Names are ``<patient>_<left|right>``: both eyes of a patient stay in one split.
    """
    root = Path(cfg.root)
    labels_path = root / "trainLabels.csv"
    table = _read_table(labels_path, ["image", "level"], "the EyePACS trainLabels.csv")
    folder = root / "train" if (root / "train").is_dir() else root
    patients = [name.rsplit("_", 1)[0] for name in table["image"]]
    eyes = [{"left": "L", "right": "R"}.get(n.rsplit("_", 1)[-1], "") for n in table["image"]]
    return _scans(
        cfg,
        labels_path,
        table["image"],
        table["image"],
        lambda i: _find_image(root, folder, i),
        table["level"],
        patients,
        eyes,
    )


def _read_messidor2(cfg: DataConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Messidor-2 with the adjudicated grades (Krause et al. 2018): ``messidor_data.csv``
    (image_id, adjudicated_dr_grade, adjudicated_gradable) + ``IMAGES/<image_id>``.
    Scans adjudicated ungradable carry no grade and are left out, with a log line."""
    root = Path(cfg.root)
    labels_path = root / "messidor_data.csv"
    columns = ["image_id", "adjudicated_dr_grade", "adjudicated_gradable"]
    table = _read_table(labels_path, columns, "the Messidor-2 messidor_data.csv")
    ungradable = table["adjudicated_gradable"].str.strip() == "0"
    if ungradable.any():
        log.info("Messidor-2: leaving out %d scans adjudicated ungradable.", ungradable.sum())
    table = table[~ungradable]
    folder = root / (cfg.image_dir or "IMAGES")
    ids = [Path(i).stem for i in table["image_id"]]
    return _scans(
        cfg,
        labels_path,
        ids,
        table["image_id"],
        lambda i: _find_image(root, folder, i),
        table["adjudicated_dr_grade"],
        ids,
        [""] * len(ids),
    )


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
        table = _read_table(labels_path, ["Image name", "Retinopathy grade"], "IDRiD labels")
        table = table[table["Image name"].str.strip() != ""]
        folder = root / "1. Original Images" / images_name
        names = table["Image name"].str.strip()
        # Both sets number their images from IDRiD_001: the set's name keeps them apart.
        ids = [f"{split}-{n}" for n in names]
        given = ["" if split == "train" else "test"] * len(names)
        parts.append(
            _scans(
                cfg,
                labels_path,
                ids,
                names,
                lambda n, f=folder: _find_image(root, f, n),
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
    ``data.label_column``; ``data.patient_column``, ``data.eye_column`` and
    ``data.split_column`` are optional. ``data.test_labels_csv``, a second CSV with the
    same columns, is the test split."""
    if not cfg.labels_csv:
        raise DataError("data=folder needs data.labels_csv (a CSV relative to data.root).")
    frame, problems = _read_folder_table(cfg, cfg.labels_csv, forced_split=None)
    if cfg.test_labels_csv:
        test, test_problems = _read_folder_table(cfg, cfg.test_labels_csv, forced_split="test")
        frame, problems = pd.concat([frame, test], ignore_index=True), problems + test_problems
    return frame, problems


def _read_folder_table(cfg: DataConfig, csv_name: str, forced_split: str | None):
    root = Path(cfg.root)
    labels_path = root / csv_name
    hint = "name its columns with data.path_column, data.label_column (and data.patient_column)"
    table = _read_table(labels_path, [cfg.path_column, cfg.label_column], csv_name, hint)
    optional = [cfg.patient_column, cfg.eye_column, cfg.split_column]
    _require_columns(table, [c for c in optional if c], labels_path, hint)
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
    locate = lambda p: confined_path(root, p)  # noqa: E731
    return _scans(
        cfg, labels_path, ids, refs, locate, table[cfg.label_column], patients, eyes, split
    )


LAYOUTS = {
    "synthetic": _read_aptos2019,  # generated in the APTOS layout (see retina.data.prepare)
    "aptos2019": _read_aptos2019,
    "eyepacs": _read_eyepacs,
    "messidor2": _read_messidor2,
    "idrid": _read_idrid,
    "folder": _read_folder,
}


def confined_path(root: Path, relative: str) -> str:
    """``relative`` as a path inside ``root``; URLs, absolute paths, ``..`` and symlinks that
    lead outside the data root are refused."""
    if "://" in relative or Path(relative).is_absolute():
        raise RowProblem("refused: not a path relative to data.root")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise RowProblem("refused: leads outside data.root")
    if not resolved.is_file():
        raise RowProblem("missing file")
    return str(Path(relative))


def _require_columns(table: pd.DataFrame, columns: list[str], path: Path, hint: str = "") -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        advice = f" ({hint})" if hint else ""
        raise DataError(
            f"{path} lacks the column(s) {missing}; it has {list(table.columns)}{advice}."
        )


def _find_image(root: Path, folder: Path, scan_id: str) -> str:
    """The image of ``scan_id`` in ``folder``, as written or with a known suffix."""
    for suffix in ("", *IMAGE_SUFFIXES):
        candidate = folder / f"{scan_id}{suffix}"
        if candidate.is_file():
            return str(candidate.relative_to(root))
    raise RowProblem(f"missing file: no {folder.name}/{scan_id}.* ({', '.join(IMAGE_SUFFIXES)})")

"""One label table -> manifest rows: reading a CSV as written, finding each scan's file
inside the data root, parsing its grade, and a problem record for every row that cannot
be used. ``retina.data.sources`` (the layouts) and ``retina.data.ungradable`` (the scans the
graders could not grade) read their tables through it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from retina.config import DataConfig, TrainLabel
from retina.errors import DataError
from retina.files import text_sha256
from retina.icdr import NUM_GRADES

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


def read_table(path: Path, columns: list[str], what: str, hint: str = "") -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found: data.root must hold {what}.")
    # Strings first: ids such as "00123" or "NA" must survive as written.
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    require_columns(table, columns, path, hint)
    return table


class RowProblem(Exception):
    """One scan that cannot be used; reported in bad_inputs.csv, never fatal on its own."""


def table_scans(
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
    grade_of=None,
) -> tuple[pd.DataFrame, list[dict]]:
    """The usable manifest rows of one label table, and a problem record for every other.

    Args:
        ids, grades, patients, eyes, split: one value per row of the table.
        refs: what the table says about each scan's file (an id or a path).
        locate: maps a ref to the image's path relative to data.root, or raises
            RowProblem.
        extra: ``OPTIONAL_COLUMNS`` the table has, one row per table row.
        grade_of: a table's grade -> int, or raises RowProblem (``parse_grade``).
    """
    extra = pd.DataFrame(index=range(len(ids))) if extra is None else extra
    grade_of = grade_of or parse_grade
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
            grade = grade_of(grade)
            if TRAIN_GRADE in more:
                more[TRAIN_GRADE] = parse_grade(more[TRAIN_GRADE])
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


def parse_grade(value: str) -> int:
    text = str(value).strip()
    if text not in {str(g) for g in range(NUM_GRADES)}:
        raise RowProblem(f"unknown label {value!r} (grades are 0..{NUM_GRADES - 1})")
    return int(text)


def site_rows(table: pd.DataFrame, cfg: DataConfig, path: Path) -> pd.DataFrame:
    """The rows of the sites ``data.sites`` names (all rows when it names none)."""
    if not cfg.sites:
        return table
    require_columns(table, ["site"], path, "data.sites needs a site column; set data.sites=[]")
    unknown = sorted(set(cfg.sites) - set(table["site"]))
    if unknown:
        raise DataError(
            f"data.sites names {unknown}, which {path} does not have; its sites are "
            f"{sorted(set(table['site']))}."
        )
    return table[table["site"].isin(cfg.sites)].reset_index(drop=True)


def extra_columns(table: pd.DataFrame, cfg: DataConfig, path: Path) -> pd.DataFrame:
    """The patient facts the table has, and the training label when it is not the
    reference grade."""
    extra = table[[c for c in PATIENT_FACTS if c in table]].copy()
    if cfg.train_label != TrainLabel.adjudicated:
        require_columns(
            table,
            [cfg.train_label],
            path,
            "data.train_label other than adjudicated needs the graders' columns",
        )
        extra[TRAIN_GRADE] = table[cfg.train_label]
    return extra


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


def require_columns(table: pd.DataFrame, columns: list[str], path: Path, hint: str = "") -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        advice = f" ({hint})" if hint else ""
        raise DataError(
            f"{path} lacks the column(s) {missing}; it has {list(table.columns)}{advice}."
        )


def find_image(root: Path, folder: Path, scan_id: str) -> str:
    """The image of ``scan_id`` in ``folder``, as written or with a known suffix."""
    for suffix in ("", *IMAGE_SUFFIXES):
        candidate = folder / f"{scan_id}{suffix}"
        if candidate.is_file():
            return str(candidate.relative_to(root))
    raise RowProblem(f"missing file: no {folder.name}/{scan_id}.* ({', '.join(IMAGE_SUFFIXES)})")

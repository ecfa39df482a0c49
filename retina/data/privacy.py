"""Source paths kept out of everything a run writes.

Clinic exports often name folders after patients (``DOE_JANE_1234/OD.jpg``). With
``data.paths_in_outputs=pseudonymise`` (the default for the generic ``folder`` layout) a
scan is known in every run, evaluation and prediction file only by a pseudonymous id, a
salted hash of its path relative to the data root, and ``manifest.csv`` carries no path.
The ids map back to paths through ``<data.cache_dir>/scan_paths.csv``, a lookup kept
beside the cache, outside any run directory (the data folder itself may be read-only).
The published layouts (APTOS, EyePACS, Messidor-2, IDRiD) name files by public ids, so
their paths are kept.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from retina.config import DataConfig, PathsInOutputs
from retina.errors import DataError
from retina.files import text_sha256, write_atomically

LOOKUP_FILE = "scan_paths.csv"
LOOKUP_COLUMNS = ["scan_id", "root", "path"]
PSEUDONYMISED_BY_DEFAULT = ("folder",)


def pseudonymises(cfg: DataConfig) -> bool:
    """Whether this data set's paths stay out of the outputs."""
    if cfg.paths_in_outputs == PathsInOutputs.auto:
        return cfg.layout in PSEUDONYMISED_BY_DEFAULT
    return cfg.paths_in_outputs == PathsInOutputs.pseudonymise


def scan_pseudonym(relative_path: str, salt: str) -> str:
    """A stable, salted, one-way id for a scan's path (relative to its data root)."""
    return "scan-" + text_sha256(f"{salt}:path:{Path(relative_path).as_posix()}")[:16]


def record_paths(cache_dir: str | Path, root: str | Path, scans: pd.DataFrame) -> Path:
    """Adds ``scans`` (columns scan_id, path) to the lookup in ``cache_dir``; returns it."""
    lookup = Path(cache_dir) / LOOKUP_FILE
    new = scans[["scan_id", "path"]].assign(root=str(Path(root).resolve()))[LOOKUP_COLUMNS]
    known = _read_lookup(lookup)
    merged = pd.concat([known, new]).drop_duplicates(["scan_id", "root"], keep="last")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    write_atomically(lookup, lambda path: merged.to_csv(path, index=False))
    return lookup


def recorded_paths(cache_dir: str | Path, root: str | Path, scan_ids: pd.Series) -> pd.Series:
    """The paths (relative to ``root``) the lookup records for ``scan_ids``.

    Raises:
        DataError: an id is not in the lookup (the cache folder was removed or changed).
    """
    lookup = Path(cache_dir) / LOOKUP_FILE
    known = _read_lookup(lookup)
    known = known[known["root"] == str(Path(root).resolve())].set_index("scan_id")["path"]
    missing = sorted(set(scan_ids) - set(known.index))
    if missing:
        raise DataError(
            f"{len(missing)} scan ids of this run (first: {missing[0]}) are not in {lookup}, "
            "which maps the run's pseudonymous ids back to files; it lives beside the cache "
            "(data.cache_dir). Point data.cache_dir at the folder the run was trained with."
        )
    return pd.Series(known.loc[list(scan_ids)].to_numpy(), index=scan_ids.index)


def _read_lookup(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=LOOKUP_COLUMNS)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def redact_problems(problems: list[dict], cfg: DataConfig) -> list[dict]:
    """Problem records with their path replaced by the scan's pseudonym (``scan_id``),
    which the lookup maps back to the path, so a user can still find the file."""
    ids = [scan_pseudonym(problem["path"], cfg.id_salt) for problem in problems]
    paths = [problem["path"] for problem in problems]
    record_paths(cfg.cache_dir, cfg.root, pd.DataFrame({"scan_id": ids, "path": paths}))
    rest = [{k: v for k, v in problem.items() if k != "path"} for problem in problems]
    return [{"scan_id": scan_id, **fields} for scan_id, fields in zip(ids, rest, strict=True)]

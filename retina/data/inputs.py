"""Scans given as ``input=`` (a folder, a CSV with a path column, or one scan), through a
run's preprocessing and cache: what predict and explain read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from retina.data.cache import build_cache
from retina.data.label_tables import IMAGE_SUFFIXES
from retina.errors import DataError


def list_inputs(reference: Path) -> tuple[Path, list[str]]:
    """(root, paths relative to it) for a folder (searched recursively for scans), a CSV
    with a ``path`` column (relative to the CSV's folder), or a single scan."""
    if reference.is_dir():
        files = sorted(
            str(p.relative_to(reference))
            for p in reference.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        return reference, files
    if reference.suffix.lower() == ".csv" and reference.is_file():
        table = pd.read_csv(reference, dtype=str, keep_default_na=False)
        if "path" not in table:
            raise DataError(f"{reference} has no 'path' column; list one scan per row there.")
        return reference.parent, table["path"].tolist()
    if reference.is_file():
        return reference.parent, [reference.name]
    raise DataError(f"input={reference} is neither a folder, a CSV nor a scan file.")


def _readable(root: Path, files: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    """The files that exist inside ``root``; the others as problems (path, reason)."""
    problems, kept = [], []
    for relative in files:
        path = (root / relative).resolve()
        if not path.is_relative_to(root.resolve()):
            problems.append({"path": relative, "reason": "outside the input folder"})
        elif not path.is_file():
            problems.append({"path": relative, "reason": "missing file"})
        else:
            kept.append(relative)
    return pd.DataFrame({"path": kept}), problems


def cached_inputs(cfg, input_path: str | Path) -> tuple[Path, pd.DataFrame, list[dict]]:
    """(input root, readable scans with ``path`` and ``cache_path``, problems as dicts of
    path and reason) for ``input=``, through the run's preprocessing and cache."""
    root, files = list_inputs(Path(input_path))
    rows, problems = _readable(root, files)
    cache_dir, salt = cfg.data.cache_dir, cfg.data.id_salt
    cached, unreadable = build_cache(rows, root, cfg.preprocess, cache_dir, salt=salt)
    cached = cached["cache_path"]
    rows = rows[cached != ""].assign(cache_path=cached[cached != ""])
    if rows.empty:
        raise DataError(
            f"input={input_path}: no readable scan among {len(files)} file(s) "
            f"({IMAGE_SUFFIXES} in a folder, a CSV with a path column, or one scan)."
        )
    return root, rows, problems + unreadable

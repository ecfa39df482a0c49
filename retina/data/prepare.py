"""The data a run works on: its manifest (saved with the run) and the cached images."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from retina.config import OnError, RunConfig, require_choice
from retina.data.cache import build_cache
from retina.data.label_tables import MANIFEST_COLUMNS
from retina.data.privacy import pseudonymises, record_paths, recorded_paths, redact_problems
from retina.data.sources import build_manifest, manifest_columns
from retina.data.splits import manifest_summary
from retina.data.synthetic import ensure_synthetic_dataset
from retina.data.ungradable import ungradable_scans
from retina.errors import DataError
from retina.files import write_atomically
from retina.run_dir import (
    BAD_INPUTS_FILE,
    GRADABILITY_FILE,
    MANIFEST_FILE,
    UNGRADABLE_SCANS_FILE,
    read_manifest,
)

log = logging.getLogger(__name__)


def prepare_run_data(
    cfg: RunConfig, run_dir: str | Path, splits: tuple[str, ...] = ("train", "val", "test")
) -> pd.DataFrame:
    """The run's manifest with a ``cache_path`` column for the usable rows of ``splits``.

    A run keeps the manifest (and so the split) it started with: a resumed or evaluated
    run reads its own ``manifest.csv`` rather than re-splitting the data. Every scan that
    cannot be used is listed in ``<run_dir>/bad_inputs.csv``; ``data.on_error=fail`` then
    stops before training, ``skip`` goes on without those scans.
    """
    require_choice("data.on_error", cfg.data.on_error, OnError)
    run_dir, private = Path(run_dir), pseudonymises(cfg.data)
    if cfg.data.layout == "synthetic":
        ensure_synthetic_dataset(
            cfg.data.root, cfg.data.synthetic, cfg.data.workers, cfg.data.sites
        )
    fresh = not (run_dir / MANIFEST_FILE).exists()
    if fresh:  # every split is cached, so the saved manifest lists only usable scans
        manifest, problems = build_manifest(cfg.data)
    else:
        manifest, problems = _rows_of(read_manifest(run_dir), cfg, splits), []
    cached, unreadable = build_cache(
        manifest,
        cfg.data.root,
        cfg.preprocess,
        cfg.data.cache_dir,
        cfg.data.workers,
        cfg.data.id_salt,
    )
    manifest[["cache_path", "gradability"]] = cached
    problems += unreadable
    if (manifest["cache_path"] == "").all():
        raise DataError(
            f"none of the {len(manifest)} scans under data.root={cfg.data.root} could be read "
            f"(first: {unreadable[0]['reason']}); check the files, or data.layout."
        )
    manifest = manifest[manifest["cache_path"] != ""].copy()
    if problems:
        problems = redact_problems(problems, cfg.data) if private else problems
        _report_bad_inputs(problems, run_dir, cfg.data.on_error)
    if fresh:
        _save_manifest(manifest, cfg, run_dir, private)
        _save_ungradable(cfg, run_dir, manifest, private)
    return manifest[manifest["split"].isin(splits)]


def _save_ungradable(cfg: RunConfig, run_dir: Path, manifest: pd.DataFrame, private: bool):
    """``ungradable_scans.csv``: the scans the graders could not grade, with a split each
    (``retina.data.ungradable``); written only when the data set has some."""
    rows = ungradable_scans(cfg.data, manifest)
    if rows.empty:
        return
    _write_rows(rows, run_dir / UNGRADABLE_SCANS_FILE, cfg, private)
    log.info("%d scans the graders found ungradable kept for the quality gate.", len(rows))


def prepare_ungradable(
    cfg: RunConfig, run_dir: str | Path, splits: tuple[str, ...] = ("train", "val", "test")
) -> pd.DataFrame:
    """The run's graders-ungradable scans of ``splits`` with a ``cache_path`` (those that
    could be cached); empty for a run without ``ungradable_scans.csv``."""
    if not (Path(run_dir) / UNGRADABLE_SCANS_FILE).is_file():
        return pd.DataFrame(columns=[*MANIFEST_COLUMNS, "cache_path"])
    rows = _rows_of(read_manifest(run_dir, UNGRADABLE_SCANS_FILE), cfg, splits)
    cached, _ = build_cache(
        rows, cfg.data.root, cfg.preprocess, cfg.data.cache_dir, cfg.data.workers, cfg.data.id_salt
    )
    rows[["cache_path", "gradability"]] = cached
    return rows[rows["cache_path"] != ""]


def _rows_of(table: pd.DataFrame, cfg: RunConfig, splits) -> pd.DataFrame:
    """The rows of ``splits`` in a table the run saved, their paths from the lookup beside
    the cache when the table holds none (``data.paths_in_outputs``)."""
    rows = table[table["split"].isin(splits)].copy()
    if pseudonymises(cfg.data):
        rows["path"] = recorded_paths(cfg.data.cache_dir, cfg.data.root, rows["scan_id"])
    return rows


def _write_rows(rows: pd.DataFrame, path: Path, cfg: RunConfig, private: bool) -> None:
    """Writes manifest rows to ``path``: no paths when they are pseudonymised (recorded in
    the lookup beside the cache instead)."""
    columns = rows[manifest_columns(rows)]
    if private:
        record_paths(cfg.data.cache_dir, cfg.data.root, rows)
        columns = columns.assign(path="")
    write_atomically(path, lambda file: columns.to_csv(file, index=False))


def _save_manifest(manifest: pd.DataFrame, cfg: RunConfig, run_dir: Path, private: bool):
    """``manifest.csv`` (no paths when they are pseudonymised: the lookup beside the cache
    has them), ``gradability.csv``, and the split in the log."""
    path = run_dir / MANIFEST_FILE
    _write_rows(manifest, path, cfg, private)
    _report_gradability(manifest, run_dir, "scan_id" if private else "path")
    log.info("Split by patient (saved to %s):\n%s", path, manifest_summary(manifest))


def _report_gradability(manifest: pd.DataFrame, run_dir: Path, name_column: str) -> None:
    """Lists scans that look ungradable (kept for training; a reader may want to know)."""
    flagged = manifest[manifest["gradability"] != ""]
    if len(flagged):
        listed = flagged[[name_column, "gradability"]]
        write_atomically(run_dir / GRADABILITY_FILE, lambda path: listed.to_csv(path, index=False))
        log.warning(
            "%d scans look ungradable (%s); listed in %s.",
            len(flagged),
            flagged["gradability"].value_counts().to_dict(),
            run_dir / GRADABILITY_FILE,
        )


def reason_counts(reasons: pd.Series) -> dict[str, int]:
    """How many scans per reason, by the reason's first clause (``missing file``, not the
    path or the detail after it)."""
    return reasons.str.split(r" \(|:", regex=True).str[0].value_counts().to_dict()


def _report_bad_inputs(problems: list[dict], run_dir: Path, on_error: str) -> None:
    path = run_dir / BAD_INPUTS_FILE
    first = "scan_id" if "scan_id" in problems[0] else "path"
    table = pd.DataFrame(problems, columns=[first, "reason", "table", "row"])
    table.to_csv(path, mode="a", header=not path.exists(), index=False)
    reasons = reason_counts(table["reason"])
    if on_error == OnError.fail:
        raise DataError(
            f"{len(table)} unusable inputs ({reasons}), listed in {path}. Fix them, "
            "or set data.on_error=skip to train without them."
        )
    log.warning("Left out %d unusable inputs (%s); listed in %s.", len(table), reasons, path)

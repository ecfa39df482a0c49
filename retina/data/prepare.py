"""The data a run works on: its manifest (saved with the run) and the cached images."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from retina.config import OnError, RunConfig, require_choice
from retina.data.cache import build_cache, gradability_of
from retina.data.sources import MANIFEST_COLUMNS, build_manifest, manifest_summary
from retina.data.synthetic import ensure_synthetic_dataset
from retina.errors import DataError
from retina.files import write_atomically
from retina.run_dir import BAD_INPUTS_FILE, GRADABILITY_FILE, MANIFEST_FILE, read_manifest

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
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST_FILE
    if cfg.data.layout == "synthetic":
        ensure_synthetic_dataset(cfg.data.root, cfg.data.synthetic, cfg.data.workers)
    fresh = not manifest_path.exists()
    if fresh:  # every split is cached, so the saved manifest lists only usable scans
        manifest, problems = build_manifest(cfg.data)
    else:
        manifest, problems = read_manifest(run_dir), []
        manifest = manifest[manifest["split"].isin(splits)].copy()
    manifest["cache_path"], unreadable = build_cache(
        manifest, cfg.data.root, cfg.preprocess, cfg.data.cache_dir, cfg.data.workers
    )
    problems += unreadable
    manifest = manifest[manifest["cache_path"] != ""].copy()
    manifest["gradability"] = [gradability_of(p) for p in manifest["cache_path"]]
    if problems:
        _report_bad_inputs(problems, run_dir, cfg.data.on_error)
    if fresh:
        _report_gradability(manifest, run_dir)
        columns = manifest[MANIFEST_COLUMNS]
        write_atomically(manifest_path, lambda path: columns.to_csv(path, index=False))
        log.info("Split by patient (saved to %s):\n%s", manifest_path, manifest_summary(manifest))
    return manifest[manifest["split"].isin(splits)]


def _report_gradability(manifest: pd.DataFrame, run_dir: Path) -> None:
    """Lists scans that look ungradable (kept for training; a reader may want to know)."""
    flagged = manifest[manifest["gradability"] != ""]
    if len(flagged):
        listed = flagged[["path", "gradability"]]
        write_atomically(run_dir / GRADABILITY_FILE, lambda path: listed.to_csv(path, index=False))
        log.warning(
            "%d scans look ungradable (%s); listed in %s.",
            len(flagged),
            flagged["gradability"].value_counts().to_dict(),
            run_dir / GRADABILITY_FILE,
        )


def _report_bad_inputs(problems: list[dict], run_dir: Path, on_error: str) -> None:
    path = run_dir / BAD_INPUTS_FILE
    table = pd.DataFrame(problems, columns=["path", "reason", "table", "row"])
    table.to_csv(path, mode="a", header=not path.exists(), index=False)
    reasons = table["reason"].str.split(r" \(|:", regex=True).str[0].value_counts().to_dict()
    if on_error == OnError.fail:
        raise DataError(
            f"{len(table)} unusable inputs ({reasons}), listed in {path}. Fix them, "
            "or set data.on_error=skip to train without them."
        )
    log.warning("Left out %d unusable inputs (%s); listed in %s.", len(table), reasons, path)

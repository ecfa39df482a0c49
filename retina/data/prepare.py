"""The data a run works on: its manifest (saved with the run) and the cached images."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from retina.config import RunConfig, SyntheticConfig
from retina.data.cache import build_cache
from retina.data.sources import MANIFEST_COLUMNS, build_manifest, manifest_summary
from retina.data.synthetic import SyntheticSpec, ensure_synthetic_dataset

log = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.csv"


def load_run_manifest(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / MANIFEST_FILE, dtype=str, keep_default_na=False).astype(
        {"grade": int}
    )


def prepare_run_data(
    cfg: RunConfig, run_dir: str | Path, splits: tuple[str, ...] = ("train", "val", "test")
) -> pd.DataFrame:
    """The run's manifest with a ``cache_path`` column for the rows of ``splits``.

    A run keeps the manifest (and so the split) it started with: a resumed or evaluated
    run reads its own ``manifest.csv`` rather than re-splitting the data.
    """
    manifest_path = Path(run_dir) / MANIFEST_FILE
    if cfg.data.layout == "synthetic":
        ensure_synthetic_dataset(cfg.data.root, _spec(cfg.data.synthetic), cfg.data.workers)
    if manifest_path.exists():
        manifest = load_run_manifest(run_dir)
    else:
        manifest = build_manifest(cfg.data)
        manifest[MANIFEST_COLUMNS].to_csv(manifest_path, index=False)
        log.info("Split by patient (saved to %s):\n%s", manifest_path, manifest_summary(manifest))
    manifest = manifest[manifest["split"].isin(splits)].copy()
    manifest["cache_path"] = build_cache(
        manifest, cfg.data.root, cfg.preprocess, cfg.data.cache_dir, cfg.data.workers
    )
    return manifest


def _spec(cfg: SyntheticConfig) -> SyntheticSpec:
    return SyntheticSpec(**vars(cfg))

"""Saliency overlays of scans: maps from ``retina.explanations.saliency`` drawn over the
preprocessed scan the model saw, written a chunk of scans at a time; the failure gallery of
an evaluation (its most confident misses and false alarms, with their overlays); and
``explain_run``, the work of ``python -m retina.explain run_dir=<run> [input=<folder|csv|
scan>] [split=test]``: ``<run_dir>/explain/<checkpoint>-<split or input>/`` with one overlay
per scan and target (``<scan id>-<method>-<target>.png``), ``explanations.csv`` and, with
``sanity_checks=true``, ``sanity_checks.json`` (``retina.explanations.sanity_checks``).

Files are named by pseudonymous scan id, never by a source path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import matplotlib
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from retina.config import ExplainConfig
from retina.data.inputs import cached_inputs
from retina.data.prepare import prepare_run_data
from retina.data.privacy import scan_pseudonym
from retina.errors import ConfigError, DataError
from retina.explanations.saliency import (
    REFERABLE,
    check_target,
    read_cached,
    saliency_function,
)
from retina.explanations.sanity_checks import log_checks, sanity_checks
from retina.files import write_atomically, write_json
from retina.icdr import REFERABLE_MIN_GRADE
from retina.inference.restore import load_run_model
from retina.quality.scoring import QUALITY_COLUMNS, load_gate, withheld
from retina.run_dir import EXPLAIN_DIR, EXPLANATIONS_FILE, GALLERY_DIR, SANITY_FILE

log = logging.getLogger(__name__)
EXPLAIN_CHUNK = 256  # scans read and explained at a time (memory bounded by a chunk)
OVERLAY_MIN_SIDE = 256  # overlays are enlarged to at least this many pixels
COLOUR_MAP = "inferno"


def overlay(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """The scan with the map laid over it: colour where the map is high, the scan where it
    is low (scaled to the map's own maximum)."""
    peak = float(saliency.max())
    weight = (saliency / peak if peak > 0 else np.zeros_like(saliency))[..., None]
    colour = matplotlib.colormaps[COLOUR_MAP](weight[..., 0])[..., :3] * 255
    blended = image * (1 - 0.6 * weight) + colour * 0.6 * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def save_overlay(path: Path, image: np.ndarray, saliency: np.ndarray) -> None:
    picture = Image.fromarray(overlay(image, saliency))
    scale = max(1, -(-OVERLAY_MIN_SIDE // image.shape[0]))
    picture = picture.resize((image.shape[1] * scale, image.shape[0] * scale), Image.BILINEAR)
    write_atomically(path, lambda file: picture.save(file, format="png"))


def write_overlays(
    model: keras.Model,
    cache_paths: list[str],
    names: list[str],
    out_dir: Path,
    method: str = "grad_cam",
    target: str = REFERABLE,
    batch: int = 32,
    bar: tqdm | None = None,
) -> list[str]:
    """Writes ``<out_dir>/<name>.png`` per scan, ``EXPLAIN_CHUNK`` scans in memory at a
    time; returns the file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [f"{name}.png" for name in names]
    maps_of = saliency_function(model, method, target, batch)
    for start in range(0, len(cache_paths), EXPLAIN_CHUNK):
        images = read_cached(cache_paths[start : start + EXPLAIN_CHUNK])
        for image, saliency, file in zip(images, maps_of(images), files[start:], strict=False):
            save_overlay(out_dir / file, image, saliency)
        if bar is not None:
            bar.update(len(images))
    return files


def failure_gallery(
    model: keras.Model,
    predictions: pd.DataFrame,
    cache_paths: list[str],
    out_dir: Path,
    per_kind: int = 4,
) -> list[dict]:
    """The ``per_kind`` most confident false negatives and false positives at the default
    operating point, each with its Grad-CAM overlay in ``<out_dir>/gallery/``."""
    referable = predictions["grade"] >= REFERABLE_MIN_GRADE
    referred = predictions["referred_default"] == 1
    chosen = pd.concat(
        [
            predictions[referable & ~referred]
            .nsmallest(per_kind, "referable_probability")
            .assign(kind="false negative"),
            predictions[~referable & referred]
            .nlargest(per_kind, "referable_probability")
            .assign(kind="false positive"),
        ]
    )
    if chosen.empty:
        return []
    paths = [cache_paths[i] for i in chosen.index]
    files = write_overlays(model, paths, chosen["scan_id"].tolist(), out_dir / GALLERY_DIR)
    return [
        {
            "scan_id": row.scan_id,
            "kind": row.kind,
            "grade": int(row.grade),
            "referable_probability": float(row.referable_probability),
            "overlay": f"{GALLERY_DIR}/{name}",
        }
        for row, name in zip(chosen.itertuples(), files, strict=True)
    ]


def explain_run(options: ExplainConfig) -> Path:
    """``python -m retina.explain``: overlays for every scan the quality gate lets through
    and every target, ``explanations.csv`` (every scan's verdict, its overlays), and with
    ``sanity_checks`` the two checks; returns the output folder."""
    run_dir = Path(options.run_dir)
    cfg, model, checkpoint = load_run_model(run_dir, options.checkpoint)
    targets = [check_target(str(t), model) for t in options.targets]
    if options.sanity_checks and options.input:
        raise ConfigError(
            "sanity_checks=true needs graded scans with lesion masks: explain a split of a "
            "run on the built-in data (input= scans have neither); drop input=."
        )
    rows, name = _scans(cfg, run_dir, options)
    out_dir = Path(options.output_dir or run_dir / EXPLAIN_DIR / f"{checkpoint.name}-{name}")
    method = str(options.method)
    verdicts = load_gate(model, cfg, checkpoint).verdicts(
        model, rows["cache_path"].tolist(), options.batch_size
    )
    held = withheld(verdicts).to_numpy()
    if held.any():
        log.info("%d scans withheld by the quality gate: no grade, no overlay.", held.sum())
    gated = rows[~held].reset_index(drop=True)
    log.info("Explaining %d scans (%s; %s) -> %s", len(gated), method, ", ".join(targets), out_dir)
    table = _explain_all(model, gated, targets, method, out_dir, options.batch_size)
    table = rows[["scan_id"]].join(verdicts[QUALITY_COLUMNS]).merge(table, "left", "scan_id")
    if options.sanity_checks:
        checks, per_scan = sanity_checks(cfg, model, gated, method)
        table = table.merge(per_scan, on="scan_id", how="left")
        write_json(out_dir / SANITY_FILE, checks)
        log_checks(checks)
    write_atomically(
        out_dir / EXPLANATIONS_FILE, lambda f: table.to_csv(f, index=False, float_format="%.6f")
    )
    return out_dir


def _scans(cfg, run_dir: Path, options: ExplainConfig) -> tuple[pd.DataFrame, str]:
    """(rows with ``scan_id``, ``cache_path`` and, for a split, ``grade`` and ``path``; the
    name of the set) for ``input=`` or the run's ``split``, cut to ``limit``."""
    if options.input:
        _, rows, problems = cached_inputs(cfg, options.input)
        if problems:
            log.warning("Left out %d unreadable inputs.", len(problems))
        rows = rows.assign(scan_id=[scan_pseudonym(p, cfg.data.id_salt) for p in rows["path"]])
        name = "input"
    else:
        name = str(options.split)
        rows = prepare_run_data(cfg, run_dir, splits=(name,))
    if rows.empty:
        raise DataError(f"nothing to explain: split {name!r} of {run_dir} has no scans.")
    return (rows.iloc[: options.limit] if options.limit else rows).reset_index(drop=True), name


def _explain_all(model, rows, targets, method, out_dir: Path, batch: int) -> pd.DataFrame:
    """An overlay per scan and target, with a progress bar; one row per overlay."""
    bar = tqdm(total=len(rows) * len(targets), desc="explaining", unit="map", leave=False)
    tables = []
    for target in targets:
        names = [f"{scan_id}-{method}-{target}" for scan_id in rows["scan_id"]]
        paths = rows["cache_path"].tolist()
        files = write_overlays(model, paths, names, out_dir, method, target, batch, bar)
        tables.append(
            pd.DataFrame(
                {"scan_id": rows["scan_id"], "method": method, "target": target, "overlay": files}
            )
        )
    bar.close()
    return pd.concat(tables, ignore_index=True)

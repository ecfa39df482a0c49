"""Explanations of a restored run: overlays, the failure gallery and the sanity checks.

``python -m retina.explain run_dir=<run> [input=<folder|csv|scan>] [split=test]`` writes
``<run_dir>/explain/<checkpoint>-<split or input>/``: one overlay PNG per scan and target
(``<scan id>-<method>-<target>.png``, the map over the preprocessed scan the model saw),
``explanations.csv``, and with ``sanity_checks=true`` ``sanity_checks.json`` (the lesion-mass
ratio and the model-randomisation rank correlation, ``retina.saliency_checks``).

Files are named by pseudonymous scan id, never by a source path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import matplotlib
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from retina.config import ExplainConfig
from retina.data.prepare import prepare_run_data
from retina.data.privacy import scan_pseudonym
from retina.errors import ConfigError, DataError
from retina.files import write_atomically, write_json
from retina.icdr import REFERABLE_MIN_GRADE
from retina.inference import load_run_model
from retina.inputs import cached_inputs
from retina.models import build_model, without_pretrained
from retina.models.heads import LOGITS_LAYER
from retina.saliency import REFERABLE, check_target, grad_cam_function, occlusion
from retina.saliency_checks import lesion_mass_ratio, lesions_in_frame, rank_correlation

log = logging.getLogger(__name__)
EXPLAIN_DIR = "explain"
OVERLAYS_DIR = "overlays"
GALLERY_DIR = "gallery"
EXPLANATIONS_FILE = "explanations.csv"
SANITY_FILE = "sanity_checks.json"
EXPLAIN_CHUNK = 256  # scans read and explained at a time (memory bounded by a chunk)
OVERLAY_MIN_SIDE = 256  # overlays are enlarged to at least this many pixels
COLOUR_MAP = "inferno"
# What the issue asks of a model that looks at the lesions (retina.saliency_checks).
MIN_LESION_MASS_RATIO = 2.0
MAX_RANDOMISED_CORRELATION = 0.5


def read_cached(cache_paths: list[str]) -> np.ndarray:
    """(scans, size, size, 3) uint8: the preprocessed scans the model sees."""
    return np.stack(
        [tf.io.decode_image(tf.io.read_file(p), channels=3).numpy() for p in cache_paths]
    )


def saliency_function(model: keras.Model, method: str, target: str, batch: int = 32):
    """``images -> (scans, size, size)`` maps of ``method`` for ``target`` (Grad-CAM traced
    once, then run ``batch`` scans at a time)."""
    if method == "occlusion":
        return lambda images: np.stack([occlusion(model, image, target) for image in images])
    maps = grad_cam_function(model, target)
    return lambda images: np.concatenate(
        [maps(tf.constant(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    )


def saliency_maps(model: keras.Model, images: np.ndarray, method: str, target: str):
    """(scans, size, size) maps of ``method`` for ``target``."""
    return saliency_function(model, method, target)(images)


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
    """``python -m retina.explain``: overlays for every scan and target, ``explanations.csv``,
    and with ``sanity_checks`` the two checks; returns the output folder."""
    run_dir = Path(options.run_dir)
    cfg, model, checkpoint = load_run_model(run_dir, options.checkpoint)
    classes = model.get_layer(LOGITS_LAYER).units
    targets = [check_target(str(t), classes) for t in options.targets]
    if options.sanity_checks and options.input:
        raise ConfigError(
            "sanity_checks=true needs graded scans with lesion masks: explain a split of a "
            "run on the built-in data (input= scans have neither); drop input=."
        )
    rows, name = _scans(cfg, run_dir, options)
    out_dir = Path(options.output_dir or run_dir / EXPLAIN_DIR / f"{checkpoint.name}-{name}")
    method = str(options.method)
    log.info("Explaining %d scans (%s; %s) -> %s", len(rows), method, ", ".join(targets), out_dir)
    table = _explain_all(model, rows, targets, method, out_dir, options.batch_size)
    if options.sanity_checks:
        checks, per_scan = sanity_checks(cfg, model, rows, method)
        table = table.merge(per_scan, on="scan_id", how="left")
        write_json(out_dir / SANITY_FILE, checks)
        _log_checks(checks)
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


def sanity_checks(
    cfg, model: keras.Model, rows: pd.DataFrame, method: str
) -> tuple[dict, pd.DataFrame]:
    """The two checks of ``retina.saliency_checks`` on the referable scans with lesion masks
    (built-in data): the summary, and one row per scan."""
    referable = rows[rows["grade"] >= REFERABLE_MIN_GRADE]
    frames = [
        lesions_in_frame(Path(cfg.data.root), p, cfg.preprocess, cfg.data.id_salt)
        for p in referable["path"]
    ]
    kept = [i for i, frame in enumerate(frames) if frame is not None]
    if not kept:
        raise DataError(
            f"no referable scan of this set has a lesion mask under {cfg.data.root}; the sanity "
            "checks need the built-in data's masks (data.synthetic.lesion_masks=true)."
        )
    referable = referable.iloc[kept]
    images = read_cached(referable["cache_path"].tolist())
    trained = saliency_maps(model, images, method, REFERABLE)
    randomised = saliency_maps(randomised_model(cfg), images, method, REFERABLE)
    per_scan = pd.DataFrame(
        {
            "scan_id": referable["scan_id"].to_numpy(),
            "lesion_mass_ratio": [
                lesion_mass_ratio(m, *frames[i]) for m, i in zip(trained, kept, strict=True)
            ],
            "randomised_rank_correlation": [
                rank_correlation(a, b) for a, b in zip(trained, randomised, strict=True)
            ],
            "randomised_flat": np.ptp(randomised, axis=(1, 2)) == 0,
        }
    )
    return _summary(per_scan, method), per_scan


def randomised_model(cfg) -> keras.Model:
    """The run's architecture with freshly initialised weights (Adebayo et al.'s model
    randomisation), in float32 like the restored one."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        return build_model(without_pretrained(cfg.model), cfg.preprocess.image_size)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _summary(per_scan: pd.DataFrame, method: str) -> dict:
    ratio, correlation = per_scan["lesion_mass_ratio"], per_scan["randomised_rank_correlation"]
    return {
        "method": method,
        "target": REFERABLE,
        "scans": len(per_scan),
        "lesion_mass_ratio": {
            "mean": ratio.mean(),
            "median": ratio.median(),
            "undefined": int(ratio.isna().sum()),
        },
        "randomised_rank_correlation": {"mean": correlation.mean(), "median": correlation.median()},
        "flat_randomised_maps": int(per_scan["randomised_flat"].sum()),
        "required": {
            "lesion_mass_ratio_mean_at_least": MIN_LESION_MASS_RATIO,
            "randomised_rank_correlation_mean_at_most": MAX_RANDOMISED_CORRELATION,
        },
        "passed": bool(
            ratio.mean() >= MIN_LESION_MASS_RATIO
            and correlation.mean() <= MAX_RANDOMISED_CORRELATION
        ),
    }


def _log_checks(checks: dict) -> None:
    log.info(
        "Sanity checks on %d referable scans (%s): lesion-mass ratio %.2f (mean; >= %.1f asked), "
        "rank correlation with a randomised model %.3f (mean; <= %.1f asked): %s",
        checks["scans"],
        checks["method"],
        checks["lesion_mass_ratio"]["mean"],
        MIN_LESION_MASS_RATIO,
        checks["randomised_rank_correlation"]["mean"],
        MAX_RANDOMISED_CORRELATION,
        "passed" if checks["passed"] else "NOT passed",
    )

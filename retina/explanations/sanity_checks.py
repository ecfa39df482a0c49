"""Sanity checks that can fail: saliency maps against where the lesions are.

Two checks, and ``sanity_checks`` that runs them on a run's referable scans:

- lesion mass: the share of a map's mass (inside the field of view) that lies on the lesion
  masks, over the masks' share of the field of view. 1 is a map that ignores the lesions;
  a model that looks at them scores well above (asked: >= 2 on average).
- model randomisation (Adebayo et al. 2018): the Spearman rank correlation between a trained
  model's maps and those of the same architecture with re-initialised weights. A map that
  survives randomisation shows the image, not what the model learnt (asked: <= 0.5).

The masks are the built-in generator's (``lesion_masks/<type>/<id_code>.png``, IDRiD's
layout), mapped into the preprocessed frame with the cache's own crop and resize.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import spearmanr

from retina.config import PreprocessConfig
from retina.data.fundus import fov_mask, mask_in_preprocessed_frame
from retina.data.images import read_image_rgb
from retina.data.synthetic.dataset import MASKS_DIR
from retina.errors import DataError
from retina.explanations.saliency import REFERABLE, read_cached, saliency_maps
from retina.icdr import REFERABLE_MIN_GRADE
from retina.models.registry import build_model, without_pretrained

log = logging.getLogger(__name__)
# What a model that looks at the lesions must reach.
MIN_LESION_MASS_RATIO = 2.0
MAX_RANDOMISED_CORRELATION = 0.5


def lesion_mass_ratio(saliency: np.ndarray, lesions: np.ndarray, fov: np.ndarray) -> float:
    """(share of the map's mass in the field of view that is on lesions) / (the lesions'
    share of the field of view); nan for an empty map or a scan without lesions."""
    inside = saliency * fov
    mass, lesion_area = float(inside.sum()), float((lesions * fov).sum())
    if mass <= 0 or lesion_area <= 0:
        return float("nan")
    return float((inside * lesions).sum()) / mass / (lesion_area / float(fov.sum()))


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation of two maps' pixels; 0 when one map is flat (a randomised
    model's Grad-CAM often is: ReLU of a negative sum everywhere), as a flat map ranks no
    pixel above another and so agrees with no ranking."""
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 0.0
    return float(spearmanr(first.ravel(), second.ravel()).statistic)


def lesions_in_frame(
    data_root: Path, relative_path: str, cfg: PreprocessConfig, salt: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """(lesion coverage, field of view), both (size, size) in 0..1 on the preprocessed
    frame, for a scan of the built-in set; None when the scan has no lesion mask."""
    id_code = Path(relative_path).stem
    files = sorted((data_root / MASKS_DIR).glob(f"*/{id_code}.png"))
    if not files:
        return None
    union = np.any([np.asarray(Image.open(file)) > 0 for file in files], axis=0)
    source = read_image_rgb(data_root / relative_path, salt)
    lesions = mask_in_preprocessed_frame(union, source, cfg)
    fov = mask_in_preprocessed_frame(fov_mask(source, cfg.fov_threshold), source, cfg)
    return lesions, fov


def sanity_checks(
    cfg, model: keras.Model, rows: pd.DataFrame, method: str
) -> tuple[dict, pd.DataFrame]:
    """The two checks above on the referable scans with lesion masks (built-in data): the
    summary, and one row per scan."""
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


def log_checks(checks: dict) -> None:
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

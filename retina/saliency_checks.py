"""Sanity checks that can fail: saliency maps against where the lesions are.

Two checks (``retina.explaining.sanity_checks`` runs them on a run's scans):

- lesion mass: the share of a map's mass (inside the field of view) that lies on the lesion
  masks, over the masks' share of the field of view. 1 is a map that ignores the lesions;
  a model that looks at them scores well above (the issue asks for >= 2 on average).
- model randomisation (Adebayo et al. 2018): the Spearman rank correlation between a trained
  model's maps and those of the same architecture with re-initialised weights. A map that
  survives randomisation shows the image, not what the model learnt (asked: <= 0.5).

The masks are the built-in generator's (``lesion_masks/<type>/<id_code>.png``, IDRiD's
layout), mapped into the preprocessed frame with the cache's own crop and resize.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from retina.config import PreprocessConfig
from retina.data.images import read_image_rgb
from retina.data.synthetic.dataset import MASKS_DIR
from retina.preprocess import fov_mask, mask_in_preprocessed_frame


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

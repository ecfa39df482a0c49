"""Fundus preprocessing on numpy arrays: find the field of view, crop to it, resize.

Pure numpy/scikit-image, run offline by the cache, never inside the tf.data graph.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

from retina.config import PreprocessConfig
from retina.errors import DataError


def fov_mask(image: np.ndarray, threshold: float = 0.08) -> np.ndarray:
    """Pixels inside the camera's circular field of view (brighter than the black surround)."""
    gray = image.astype(np.float32).mean(axis=2)
    return gray > threshold * np.percentile(gray, 99)


def fit_circle(mask: np.ndarray) -> tuple[float, float, float]:
    """Centre row, centre column and radius of the field of view.

    The horizontal extent gives the radius: cameras often clip the circle at the top and
    bottom, rarely at the sides. The centre row is the middle of the widest rows.
    """
    widths = mask.sum(axis=1)
    if widths.max() < 0.1 * mask.shape[1]:
        raise DataError("no field of view found: the image is (nearly) black.")
    columns = np.flatnonzero(mask.any(axis=0))
    radius = (columns[-1] - columns[0] + 1) / 2
    centre_col = (columns[-1] + columns[0]) / 2
    widest = np.flatnonzero(widths >= widths.max() - max(2, 0.01 * widths.max()))
    return float(widest.mean()), float(centre_col), float(radius)


def crop_to_circle(image: np.ndarray, circle: tuple[float, float, float]) -> np.ndarray:
    """The square of side 2r around the circle, padded with black where it leaves the image."""
    centre_row, centre_col, radius = circle
    top, left = int(round(centre_row - radius)), int(round(centre_col - radius))
    side = int(round(2 * radius))
    out = np.zeros((side, side, image.shape[2]), image.dtype)
    rows = slice(max(top, 0), min(top + side, image.shape[0]))
    cols = slice(max(left, 0), min(left + side, image.shape[1]))
    out[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left] = image[
        rows, cols
    ]
    return out


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased resize to size x size, back to uint8."""
    resized = resize(image, (size, size), anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def preprocess_fundus(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The full chain the cache applies to every scan; returns (size, size, 3) uint8."""
    if cfg.crop_to_fov:
        image = crop_to_circle(image, fit_circle(fov_mask(image, cfg.fov_threshold)))
    return resize_square(image, cfg.image_size)

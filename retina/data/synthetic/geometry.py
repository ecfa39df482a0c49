"""Drawing primitives of the synthetic photographs, in pixels of a float32 RGB image:
smooth noise, soft blobs, alpha blending, vessel-like random walks and their rasterisation,
and random points inside the field of view."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import draw


def smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed at ``sigma`` px (drawn coarse, then upsampled)."""
    factor = max(1, int(sigma // 2))
    small = rng.standard_normal((shape[0] // factor + 2, shape[1] // factor + 2), np.float32)
    small = ndimage.gaussian_filter(small, sigma / factor)
    noise = ndimage.zoom(small, factor, order=1)[: shape[0], : shape[1]]
    return noise / (noise.std() + 1e-6)


def gaussian_blob(yy, xx, at, sigma) -> np.ndarray:
    return np.exp(-((yy - at[0]) ** 2 + (xx - at[1]) ** 2) / np.float32(2 * sigma**2))


def blend(image, mask, colour) -> None:
    """Paints ``colour`` over ``image`` with opacity ``mask`` (0..1), in place; only inside
    the mask's bounding box (lesions cover a sliver of the image)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    opacity = np.clip(mask[box], 0, 1, dtype=np.float32)[..., None]
    image[box] *= 1 - opacity
    image[box] += opacity * colour


def vessel_path(rng, start, angle, length, curvature, r, step=0.025):
    """A smooth random walk; returns points (N, 2) in pixels."""
    points = [np.asarray(start, float)]
    for _ in range(int(length / step)):
        angle += curvature * step + rng.normal(0, 0.06)
        points.append(points[-1] + step * r * np.array([np.sin(angle), np.cos(angle)]))
    return np.array(points)


def stamp_path(canvas, points, width) -> None:
    """Rasterises a polyline of the given width (pixels) into ``canvas`` (max-blend)."""
    pixels = [
        draw.line_aa(int(a[0]), int(a[1]), int(b[0]), int(b[1]))
        for a, b in zip(points[:-1], points[1:], strict=False)
    ]
    rows, cols, value = (np.concatenate(part) for part in zip(*pixels, strict=True))
    keep = (rows >= 0) & (rows < canvas.shape[0]) & (cols >= 0) & (cols < canvas.shape[1])
    np.maximum.at(canvas, (rows[keep], cols[keep]), (value[keep] * width).astype(canvas.dtype))


def thicken(width_map: np.ndarray) -> np.ndarray:
    """Turns centre lines labelled with widths into soft vessel masks of those widths."""
    result = np.zeros_like(width_map)
    for lo, hi in ((0.1, 2.0), (2.0, 3.5), (3.5, 5.5), (5.5, 1e9)):
        band = (width_map > lo) & (width_map <= hi)
        if band.any():
            distance = ndimage.distance_transform_edt(~band)
            half = width_map[band].mean() / 2
            result = np.maximum(result, np.clip(half + 0.5 - distance, 0, 1) * 0.85)
    return result


def random_points(rng, count, centre, r, disc, quadrant=None, max_rho=0.85):
    """Uniform points in the field of view (optionally one quadrant), away from the disc."""
    points = []
    while len(points) < count:
        angle = (
            rng.uniform(0, 2 * np.pi)
            if quadrant is None
            else rng.uniform(quadrant * np.pi / 2, (quadrant + 1) * np.pi / 2)
        )
        rho = max_rho * np.sqrt(rng.uniform(0.02, 1))
        point = centre + r * rho * np.array([np.sin(angle), np.cos(angle)])
        if np.linalg.norm(point - disc) > 0.15 * r:
            points.append(point)
    return points

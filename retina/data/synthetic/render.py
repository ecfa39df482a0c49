"""Procedural colour fundus photographs with ICDR-graded diabetic retinopathy lesions.

Geometry is expressed in units of the field-of-view radius ``r``, so lesions keep their
size relative to the retina whatever the image size. Every image is drawn from one numpy
Generator, so the same seed draws the same photograph.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw

# Colours in linear-ish RGB, 0..1.
BACKGROUND = np.array([0.78, 0.34, 0.14], np.float32)
DISC = np.array([0.98, 0.82, 0.55], np.float32)
CUP = np.array([1.0, 0.95, 0.80], np.float32)
VEIN = np.array([0.45, 0.08, 0.06], np.float32)
ARTERY = np.array([0.62, 0.16, 0.09], np.float32)
BLOOD = np.array([0.38, 0.04, 0.04], np.float32)
EXUDATE = np.array([0.98, 0.88, 0.42], np.float32)
COTTON_WOOL = np.array([0.92, 0.80, 0.66], np.float32)


def render_fundus(
    rng: np.random.Generator, grade: int, eye: str, height: int, camera: bool = True
) -> np.ndarray:
    """Draws one fundus photograph.

    Args:
        rng: source of all randomness for this image.
        grade: ICDR grade 0..4 whose lesions are drawn.
        eye: "R" or "L"; the optic disc is drawn on the image's right for a right eye.
        height: image height in pixels; the width is 1.2 times that, like a camera frame.
        camera: apply exposure, colour cast, blur, noise and JPEG; False gives the clean
            scene (tests compare lesions against the same scene at grade 0).

    Returns:
        An (height, 1.2*height, 3) uint8 RGB image.
    """
    width = int(round(height * 1.2))
    r = height * rng.uniform(0.47, 0.54)  # > 0.5 clips the circle top and bottom
    centre = np.array(
        [height / 2 + rng.normal(0, 0.02 * height), width / 2 + rng.normal(0, 0.02 * height)]
    )
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = centre.astype(np.float32)
    r = np.float32(r)
    dy, dx = (yy - centre[0]) / r, (xx - centre[1]) / r
    rho = np.sqrt(dx**2 + dy**2)  # float32 throughout: generation time is the budget

    image = _background(rng, rho, dx, dy, height, r)
    side = 1.0 if eye == "R" else -1.0
    disc = centre + r * np.array([rng.normal(0, 0.04), side * rng.uniform(0.33, 0.42)])
    macula = centre + r * np.array([rng.normal(0, 0.03), -side * rng.uniform(0.02, 0.08)])
    _draw_macula(image, yy, xx, macula, r)
    _draw_disc(image, yy, xx, disc, r, rng)
    veins = _draw_vessels(image, rng, disc, macula, side, r, beading=grade >= 3)
    _draw_lesions(image, rng, grade, centre, disc, veins, r)
    if not camera:
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return _camera(image, rng, rho, r)


def _background(rng, rho, dx, dy, height, r) -> np.ndarray:
    colour = (BACKGROUND * rng.uniform(0.85, 1.12) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
    coarse = _smooth_noise(rng, rho.shape, r / 12)
    fine = _smooth_noise(rng, rho.shape, 1.2)
    texture = 1 + 0.06 * coarse + 0.03 * fine
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1 + rng.uniform(0.05, 0.2) * (dx * np.cos(angle) + dy * np.sin(angle))
    vignette = np.clip(1 - rng.uniform(0.35, 0.6) * rho**2.4, 0.1, 1)
    return (colour[None, None] * (texture * gradient * vignette)[..., None]).astype(np.float32)


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed at ``sigma`` px (drawn coarse, then upsampled)."""
    factor = max(1, int(sigma // 2))
    small = rng.standard_normal((shape[0] // factor + 2, shape[1] // factor + 2), np.float32)
    small = ndimage.gaussian_filter(small, sigma / factor)
    noise = ndimage.zoom(small, factor, order=1)[: shape[0], : shape[1]]
    return noise / (noise.std() + 1e-6)


def _gaussian_blob(yy, xx, at, sigma) -> np.ndarray:
    return np.exp(-((yy - at[0]) ** 2 + (xx - at[1]) ** 2) / np.float32(2 * sigma**2))


def _blend(image, mask, colour) -> None:
    mask = np.clip(mask, 0, 1, dtype=np.float32)[..., None]
    image *= 1 - mask
    image += mask * colour


def _draw_macula(image, yy, xx, at, r) -> None:
    image *= (1 - 0.45 * _gaussian_blob(yy, xx, at, 0.13 * r))[..., None]
    reflex = 0.5 * _gaussian_blob(yy, xx, at, 0.012 * r)
    _blend(image, reflex, np.array([0.9, 0.6, 0.4], np.float32))


def _draw_disc(image, yy, xx, at, r, rng) -> None:
    radius = r * rng.uniform(0.085, 0.11)
    distance = np.sqrt((yy - at[0]) ** 2 + (xx - at[1]) ** 2 * rng.uniform(0.8, 1.0))
    _blend(image, np.clip((radius - distance) / (0.25 * radius) + 0.5, 0, 1), DISC)
    cup = np.clip((0.45 * radius - distance) / (0.3 * radius) + 0.5, 0, 1)
    _blend(image, 0.8 * cup, CUP)


def _vessel_path(rng, start, angle, length, curvature, r, step=0.025):
    """A smooth random walk; returns points (N, 2) in pixels."""
    points = [np.asarray(start, float)]
    for _ in range(int(length / step)):
        angle += curvature * step + rng.normal(0, 0.06)
        points.append(points[-1] + step * r * np.array([np.sin(angle), np.cos(angle)]))
    return np.array(points)


def _stamp_path(canvas, points, width) -> None:
    """Rasterises a polyline of the given width (pixels) into ``canvas`` (max-blend)."""
    pixels = [
        draw.line_aa(int(a[0]), int(a[1]), int(b[0]), int(b[1]))
        for a, b in zip(points[:-1], points[1:], strict=False)
    ]
    rows, cols, value = (np.concatenate(part) for part in zip(*pixels, strict=True))
    keep = (rows >= 0) & (rows < canvas.shape[0]) & (cols >= 0) & (cols < canvas.shape[1])
    np.maximum.at(canvas, (rows[keep], cols[keep]), (value[keep] * width).astype(canvas.dtype))


def _draw_vessels(image, rng, disc, macula, side, r, beading: bool) -> list[np.ndarray]:
    """Four arcades from the disc, each branching twice; returns the main vein paths."""
    shape = image.shape[:2]
    widths = {"vein": np.zeros(shape, np.float32), "artery": np.zeros(shape, np.float32)}
    veins = []
    toward_macula = np.arctan2(macula[0] - disc[0], macula[1] - disc[1])
    for kind, offset in (("vein", 0.0), ("artery", 0.12)):
        for up in (-1, 1):
            # Temporal arcades loop around the macula; nasal ones run straight out.
            temporal = toward_macula + up * (1.0 + offset + rng.normal(0, 0.1))
            curvature = -up * rng.uniform(1.6, 2.2)
            trunk = _vessel_path(rng, disc, temporal, rng.uniform(1.1, 1.4), curvature, r)
            nasal = toward_macula + np.pi - up * (0.6 + offset + rng.normal(0, 0.15))
            branch = _vessel_path(rng, disc, nasal, rng.uniform(0.7, 0.9), 0.0, r)
            base_width = (0.022 if kind == "vein" else 0.016) * r
            for path in (trunk, branch):
                _stamp_path(widths[kind], path, base_width)
                if kind == "vein":
                    veins.append(path)
                for k in rng.choice(np.arange(6, len(path) - 4), size=3, replace=False):
                    child_angle = np.arctan2(*(path[k + 1] - path[k])) + rng.choice([-1, 1]) * 0.7
                    child = _vessel_path(
                        rng, path[k], child_angle, rng.uniform(0.3, 0.6), rng.normal(0, 1.5), r
                    )
                    _stamp_path(widths[kind], child, 0.65 * base_width)
    for kind, colour in (("vein", VEIN), ("artery", ARTERY)):
        if beading and kind == "vein":
            _add_beads(widths[kind], veins, rng, r)
        _blend(image, _thicken(widths[kind]), colour)
    return veins


def _add_beads(width_map, veins, rng, r) -> None:
    """Venous beading: localised widenings strung along the main veins."""
    for path in veins:
        for k in range(3, len(path), int(rng.integers(3, 5))):
            rows, cols = draw.disk(tuple(path[k]), 0.012 * r, shape=width_map.shape)
            width_map[rows, cols] = np.maximum(width_map[rows, cols], 0.032 * r)


def _thicken(width_map: np.ndarray) -> np.ndarray:
    """Turns centre lines labelled with widths into soft vessel masks of those widths."""
    result = np.zeros_like(width_map)
    for lo, hi in ((0.1, 2.0), (2.0, 3.5), (3.5, 5.5), (5.5, 1e9)):
        band = (width_map > lo) & (width_map <= hi)
        if band.any():
            distance = ndimage.distance_transform_edt(~band)
            half = width_map[band].mean() / 2
            result = np.maximum(result, np.clip(half + 0.5 - distance, 0, 1) * 0.85)
    return result


def _random_points(rng, count, centre, r, disc, quadrant=None, max_rho=0.85):
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


def _draw_spots(image, points, radius_range, colour, rng, r, strength=0.95) -> None:
    mask = np.zeros(image.shape[:2], np.float32)
    for point in points:
        radius = r * rng.uniform(*radius_range)
        rows, cols = draw.ellipse(
            point[0],
            point[1],
            radius,
            radius * rng.uniform(0.7, 1.3),
            shape=mask.shape,
            rotation=rng.uniform(0, np.pi),
        )
        mask[rows, cols] = strength
    _blend(image, ndimage.gaussian_filter(mask, 0.6), colour)


def _draw_lesions(image, rng, grade, centre, disc, veins, r) -> None:
    microaneurysms = {
        0: 0,
        1: rng.integers(3, 7),
        2: rng.integers(8, 16),
        3: rng.integers(10, 20),
        4: rng.integers(8, 20),
    }[grade]
    _draw_spots(
        image, _random_points(rng, microaneurysms, centre, r, disc), (0.009, 0.014), BLOOD, rng, r
    )
    if grade == 2:
        blots = _random_points(rng, rng.integers(3, 7), centre, r, disc)
    elif grade >= 3:
        # Severe NPDR's "4-2-1" rule starts with haemorrhages in all four quadrants.
        blots = [
            p
            for q in range(4)
            for p in _random_points(rng, rng.integers(3, 6), centre, r, disc, quadrant=q)
        ]
    else:
        blots = []
    _draw_spots(image, blots, (0.022, 0.045), BLOOD, rng, r)
    if grade >= 2:
        _draw_exudates(image, rng, centre, disc, r, clusters=rng.integers(1, 4))
    if grade == 3:
        _draw_spots(
            image,
            _random_points(rng, rng.integers(2, 5), centre, r, disc, max_rho=0.6),
            (0.03, 0.05),
            COTTON_WOOL,
            rng,
            r,
            strength=0.6,
        )
    if grade == 4:
        _draw_neovascularisation(image, rng, centre, disc, r)
        if rng.random() < 0.75:
            _draw_preretinal_haemorrhage(image, rng, centre, disc, r)


def _draw_exudates(image, rng, centre, disc, r, clusters) -> None:
    for cluster_centre in _random_points(rng, clusters, centre, r, disc, max_rho=0.6):
        spread = r * rng.uniform(0.04, 0.09)
        spots = [cluster_centre + rng.normal(0, spread, 2) for _ in range(rng.integers(5, 14))]
        _draw_spots(image, spots, (0.008, 0.018), EXUDATE, rng, r)


def _draw_neovascularisation(image, rng, centre, disc, r) -> None:
    """Fine tortuous vessel tufts, at the disc (NVD) or elsewhere (NVE)."""
    widths = np.zeros(image.shape[:2], np.float32)
    sites = [disc] + _random_points(rng, rng.integers(1, 3), centre, r, disc, max_rho=0.7)
    for site in sites:
        for _ in range(rng.integers(5, 9)):
            start = site + rng.normal(0, 0.03 * r, 2)
            loop = _vessel_path(
                rng,
                start,
                rng.uniform(0, 2 * np.pi),
                rng.uniform(0.12, 0.25),
                rng.choice([-1, 1]) * rng.uniform(12, 20),
                r,
                step=0.012,
            )
            _stamp_path(widths, loop, 0.009 * r)
    _blend(image, _thicken(widths), BLOOD * 1.3)


def _draw_preretinal_haemorrhage(image, rng, centre, disc, r) -> None:
    """A boat-shaped haemorrhage: a disk whose top is cut flat by the settled blood level."""
    at = _random_points(rng, 1, centre, r, disc, max_rho=0.55)[0]
    radius = r * rng.uniform(0.08, 0.14)
    mask = np.zeros(image.shape[:2], np.float32)
    rows, cols = draw.disk(tuple(at), radius, shape=mask.shape)
    keep = rows > at[0] - 0.3 * radius
    mask[rows[keep], cols[keep]] = 1.0
    _blend(image, ndimage.gaussian_filter(mask, 1.0), BLOOD * 0.8)


def _camera(image, rng, rho, r) -> np.ndarray:
    """Exposure, colour cast, defocus blur, sensor noise and JPEG round trip."""
    image = (
        image * np.float32(rng.uniform(0.85, 1.2)) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    )
    image = np.clip(image, 0, 1) ** rng.uniform(0.85, 1.15)
    blur = rng.uniform(0.0, 1.0) * r / 160
    if blur > 0.2:
        image = ndimage.gaussian_filter(image, (blur, blur, 0))
    image = image + 0.012 * rng.standard_normal(image.shape, np.float32)
    field = np.clip((1 - rho) * r / 1.5, 0, 1)[..., None]  # soft 1.5 px edge
    image = image * field + 0.012 * rng.random(image.shape, np.float32) * (1 - field)
    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=int(rng.integers(70, 96)))
        pixels = np.asarray(Image.open(buffer).convert("RGB"))
    return pixels

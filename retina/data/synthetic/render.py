"""Procedural colour fundus photographs: the retina scene (background, macula, optic disc,
vessel arcades), its lesions (``lesions``), and the camera's photograph of it (``camera``).

Geometry is expressed in units of the field-of-view radius ``r``, so lesions keep their
size relative to the retina whatever the image size. Every image is drawn from one numpy
Generator, so the same seed draws the same photograph.
"""

from __future__ import annotations

import numpy as np
from skimage import draw

from retina.data.synthetic.camera import photograph
from retina.data.synthetic.geometry import (
    blend,
    gaussian_blob,
    smooth_noise,
    stamp_path,
    thicken,
    vessel_path,
)
from retina.data.synthetic.lesions import LesionCanvas, draw_lesions
from retina.data.synthetic.population import SITE_BY_NAME, Camera
from retina.data.synthetic.quality import Quality

# Colours in linear-ish RGB, 0..1.
BACKGROUND = np.array([0.78, 0.34, 0.14], np.float32)
DISC = np.array([0.98, 0.82, 0.55], np.float32)
CUP = np.array([1.0, 0.95, 0.80], np.float32)
VEIN = np.array([0.45, 0.08, 0.06], np.float32)
ARTERY = np.array([0.62, 0.16, 0.09], np.float32)
DEFAULT_CAMERA = SITE_BY_NAME["A"].camera
CLEAR = Quality()


def render_fundus(
    rng: np.random.Generator,
    severity: float,
    eye: str,
    height: int,
    camera: bool = True,
    *,
    site_camera: Camera = DEFAULT_CAMERA,
    quality: Quality = CLEAR,
    canvas: LesionCanvas | None = None,
    lesion_scale: float = 1.0,
) -> np.ndarray:
    """Draws one fundus photograph.

    Args:
        rng: source of all randomness for this image.
        severity: ICDR grade plus the position within it (``grade + t``, t in [0, 1);
            ``g + 0.5`` is a typical grade-g eye); see ``retina.data.synthetic.lesions``.
        eye: "R" or "L"; the optic disc is drawn on the image's right for a right eye.
        height: image height in pixels; the width is 1.2 times that, like a camera frame.
        camera: photograph the scene with ``site_camera`` under ``quality``; False gives
            the clean scene (tests compare lesions against the same scene at grade 0).
        canvas: receives the coverage of every lesion drawn, per type (for the masks).
        lesion_scale: multiplies every lesion spot's radius.

    Returns:
        An (height, 1.2*height, 3) uint8 RGB image.
    """
    width = int(round(height * 1.2))
    r = height * rng.uniform(*site_camera.fov_radius)  # > 0.5 clips the circle top and bottom
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
    _draw_vessels(image, rng, disc, macula, side, r, beading=severity >= 3)
    canvas = canvas or LesionCanvas(image.shape[:2])
    draw_lesions(image, rng, severity, centre, disc, r, canvas, lesion_scale)
    if not camera:
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return photograph(image, rng, rho, r, site_camera, quality)


def _background(rng, rho, dx, dy, height, r) -> np.ndarray:
    colour = (BACKGROUND * rng.uniform(0.85, 1.12) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
    coarse = smooth_noise(rng, rho.shape, r / 12)
    fine = smooth_noise(rng, rho.shape, 1.2)
    texture = 1 + 0.06 * coarse + 0.03 * fine
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1 + rng.uniform(0.05, 0.2) * (dx * np.cos(angle) + dy * np.sin(angle))
    vignette = np.clip(1 - rng.uniform(0.35, 0.6) * rho**2.4, 0.1, 1)
    return (colour[None, None] * (texture * gradient * vignette)[..., None]).astype(np.float32)


def _draw_macula(image, yy, xx, at, r) -> None:
    image *= (1 - 0.45 * gaussian_blob(yy, xx, at, 0.13 * r))[..., None]
    reflex = 0.5 * gaussian_blob(yy, xx, at, 0.012 * r)
    blend(image, reflex, np.array([0.9, 0.6, 0.4], np.float32))


def _draw_disc(image, yy, xx, at, r, rng) -> None:
    radius = r * rng.uniform(0.085, 0.11)
    distance = np.sqrt((yy - at[0]) ** 2 + (xx - at[1]) ** 2 * rng.uniform(0.8, 1.0))
    blend(image, np.clip((radius - distance) / (0.25 * radius) + 0.5, 0, 1), DISC)
    cup = np.clip((0.45 * radius - distance) / (0.3 * radius) + 0.5, 0, 1)
    blend(image, 0.8 * cup, CUP)


def _draw_vessels(image, rng, disc, macula, side, r, beading: bool) -> None:
    """Four arcades from the disc, each branching twice; beaded veins when ``beading``.
    The beads draw from a generator of their own, so the rest of the scene is the same
    photograph with or without them."""
    bead_rng = np.random.default_rng(rng.integers(2**32))
    shape = image.shape[:2]
    widths = {"vein": np.zeros(shape, np.float32), "artery": np.zeros(shape, np.float32)}
    veins = []
    toward_macula = np.arctan2(macula[0] - disc[0], macula[1] - disc[1])
    for kind, offset in (("vein", 0.0), ("artery", 0.12)):
        for up in (-1, 1):
            # Temporal arcades loop around the macula; nasal ones run straight out.
            temporal = toward_macula + up * (1.0 + offset + rng.normal(0, 0.1))
            curvature = -up * rng.uniform(1.6, 2.2)
            trunk = vessel_path(rng, disc, temporal, rng.uniform(1.1, 1.4), curvature, r)
            nasal = toward_macula + np.pi - up * (0.6 + offset + rng.normal(0, 0.15))
            branch = vessel_path(rng, disc, nasal, rng.uniform(0.7, 0.9), 0.0, r)
            base_width = (0.022 if kind == "vein" else 0.016) * r
            for path in (trunk, branch):
                stamp_path(widths[kind], path, base_width)
                if kind == "vein":
                    veins.append(path)
                for k in rng.choice(np.arange(6, len(path) - 4), size=3, replace=False):
                    child_angle = np.arctan2(*(path[k + 1] - path[k])) + rng.choice([-1, 1]) * 0.7
                    child = vessel_path(
                        rng, path[k], child_angle, rng.uniform(0.3, 0.6), rng.normal(0, 1.5), r
                    )
                    stamp_path(widths[kind], child, 0.65 * base_width)
    for kind, colour in (("vein", VEIN), ("artery", ARTERY)):
        if beading and kind == "vein":
            _add_beads(widths[kind], veins, bead_rng, r)
        blend(image, thicken(widths[kind]), colour)


def _add_beads(width_map, veins, rng, r) -> None:
    """Venous beading: localised widenings strung along the main veins."""
    for path in veins:
        for k in range(3, len(path), int(rng.integers(3, 5))):
            rows, cols = draw.disk(tuple(path[k]), 0.012 * r, shape=width_map.shape)
            width_map[rows, cols] = np.maximum(width_map[rows, cols], 0.032 * r)

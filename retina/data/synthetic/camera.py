"""From a clean retina scene to the photograph a site's camera takes of it: colour response,
exposure, cataract haze, defocus, small-pupil shadow, eyelashes, rim glare, sensor noise,
the field-of-view edge and the camera's own JPEG compression."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from retina.data.synthetic.geometry import smooth_noise, vessel_path
from retina.data.synthetic.population import Camera
from retina.data.synthetic.quality import Quality

HAZE_COLOUR = np.array([0.75, 0.55, 0.30], np.float32)  # a brunescent lens veil
RIM_COLOUR = np.array([1.0, 0.85, 0.6], np.float32)
LASH_COLOUR = np.array([0.06, 0.04, 0.03], np.float32)


def photograph(image, rng, rho, r, camera: Camera, quality: Quality) -> np.ndarray:
    """The uint8 photograph of the float32 scene ``image`` (``rho``: distance from the field's
    centre in field radii; ``r``: field radius in pixels)."""
    gain = camera.colour_gain * rng.uniform(0.96, 1.04, 3)
    image = image * (gain * quality.exposure).astype(np.float32)
    image = np.clip(image, 0, 1) ** np.float32(rng.uniform(0.9, 1.1))
    if quality.haze:
        brightness = ndimage.gaussian_filter(image.mean(axis=2), r / 8)[..., None]
        image = image * (1 - quality.haze) + quality.haze * HAZE_COLOUR * (0.4 + brightness)
    blur = np.hypot(quality.defocus * r / 160, quality.haze * r / 60)
    if blur > 0.2:
        image = ndimage.gaussian_filter(image, (blur, blur, 0))
    if quality.pupil:
        shadow = np.clip((rho - 0.35) / 0.65, 0, 1) ** 1.5
        image = image * (1 - quality.pupil * shadow)[..., None]
    if quality.eyelash:
        _eyelashes(image, rng, r)
    if quality.rim:
        _rim_glare(image, rng, rho, r)
    image = image + 0.012 * rng.standard_normal(image.shape, np.float32)
    field = np.clip((1 - rho) * r / 1.5, 0, 1)[..., None]  # soft 1.5 px edge
    image = image * field + 0.012 * rng.random(image.shape, np.float32) * (1 - field)
    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if camera.jpeg_quality[1]:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(
            buffer, "JPEG", quality=int(rng.integers(*camera.jpeg_quality))
        )
        pixels = np.asarray(Image.open(buffer).convert("RGB"))
    return pixels


def _eyelashes(image, rng, r) -> None:
    """A few dark, out-of-focus lashes curving in from the top or bottom edge."""
    height, width = image.shape[:2]
    lashes = np.zeros((height, width), np.float32)
    top = rng.random() < 0.5
    for _ in range(rng.integers(3, 7)):
        start = np.array([0.0 if top else height - 1.0, rng.uniform(0.25, 0.75) * width])
        angle = (np.pi / 2 if top else -np.pi / 2) + rng.normal(0, 0.4)
        path = vessel_path(rng, start, angle, rng.uniform(0.2, 0.45), rng.normal(0, 2), r)
        rows = np.clip(path[:, 0].astype(int), 0, height - 1)
        cols = np.clip(path[:, 1].astype(int), 0, width - 1)
        lashes[rows, cols] = 1.0
    lashes = np.clip(ndimage.gaussian_filter(lashes, r / 40) * (r / 12), 0, 0.85)
    image *= 1 - lashes[..., None]
    image += lashes[..., None] * LASH_COLOUR


def _rim_glare(image, rng, rho, r) -> None:
    """A bright crescent on one side of the field's edge (the camera slightly off-axis)."""
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    side = np.cos(np.arctan2(yy - height / 2, xx - width / 2) - angle)
    crescent = np.clip((rho - 0.8) / 0.2, 0, 1) * np.clip(side, 0, 1) ** 3
    glare = 0.7 * crescent * (1 + 0.2 * smooth_noise(rng, rho.shape, r / 10))
    image *= 1 - glare[..., None]
    image += glare[..., None] * RIM_COLOUR

"""Augmentations as pure TF ops, seeded per element so a resumed stream is exact.

Every op takes an explicit ``seed`` (a shape-[2] int tensor) and uses only TF's stateless
random ops. The training stream passes ``seed = (run seed, element index)``, so the same
element index always gets the same augmentation, eagerly or inside tf.data, on any worker
and in any order of ``num_parallel_calls``. A resumed tf.data iterator therefore reproduces
the augmentation exactly, and nothing but the iterator position needs checkpointing: there
is no random-generator state (no ``tf.random.Generator``, no Keras ``SeedGenerator``, no
Python or NumPy randomness) to save alongside it.

``augment_image`` splits its seed into one independent seed per op, always into the same
number of parts, so switching one op on or off does not change what the others draw.

Ops take and return uint8 (H, W, 3) images. Geometry and colour are computed in float32
and rounded back, because truncating to uint8 would darken every interpolated pixel.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import tensorflow as tf

from retina.data.image_ops import affine, rotation, to_uint8
from retina.data.rand_augment import MAX_MAGNITUDE, rand_augment, random_erasing
from retina.errors import ConfigError

if TYPE_CHECKING:
    from retina.config import AugmentConfig

# A pixel whose brightest channel is at most this (of 255) counts as the black surround.
# JPEG ringing and sensor noise leave the surround a few levels above 0; the darkest
# fundus tissue (vessels near the rim) still has a red channel well above it.
BACKGROUND_LEVEL = 8

_NUM_OP_SEEDS = 4


def random_flips(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Left-right and up-down flips, each with probability 1/2.

    A left-right flip turns a right-eye photograph into a plausible left-eye one; DR
    grading does not depend on laterality or orientation.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    return tf.image.stateless_random_flip_up_down(image, seeds[1])


def random_rotation(
    image: tf.Tensor, seed: tf.Tensor, max_degrees: float, fill: int = 0
) -> tf.Tensor:
    """Rotation about the image centre by an angle uniform in [-max_degrees, max_degrees].

    The camera's roll and the patient's head tilt vary from photograph to photograph, and
    the field of view is a disc, so a rotated fundus is as plausible as the original.
    Bilinear interpolation; corners that come from outside the image are filled with
    ``fill``, the surround's value (black, or grey 128 after Ben Graham preprocessing).

    Args:
        image: uint8 (H, W, 3) image.
        seed: shape-[2] integer seed.
        max_degrees: largest rotation either way, in degrees.
        fill: the value of the pixels outside the field of view.

    Returns:
        The rotated uint8 image, same shape.
    """
    max_radians = math.radians(max_degrees)
    angle = tf.random.stateless_uniform([], seed, minval=-max_radians, maxval=max_radians)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    # The op maps each output pixel back to the input point it samples; float32 lets us
    # round (on uint8 it truncates each interpolated value).
    rotated = affine(tf.cast(image, tf.float32), rotation(angle, size[0], size[1]), fill)
    return to_uint8(rotated, image.shape)


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, min_scale: float) -> tf.Tensor:
    """A random square crop, resized back to the full image: a random zoom and shift.

    The crop's side is round(s * H) for s uniform in [min_scale, 1], placed uniformly so it
    stays inside the image. The cache crops each image to its field of view, so the image
    is the square around the FOV disc and every crop stays on that square. The crop is
    enlarged back to (H, W) bilinearly; min_scale=1 gives the image back unchanged.

    Args:
        image: uint8 (H, W, 3) image with H == W.
        seed: shape-[2] integer seed.
        min_scale: smallest crop side as a fraction of the image side, in (0, 1].

    Returns:
        The cropped and resized uint8 image, same shape.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    shape = tf.shape(image)
    scale = tf.random.stateless_uniform([], seeds[0], minval=min_scale, maxval=1.0)
    side = tf.cast(tf.round(scale * tf.cast(shape[0], tf.float32)), tf.int32)
    side = tf.clip_by_value(side, 1, shape[0])
    crop = tf.image.stateless_random_crop(image, tf.stack([side, side, shape[2]]), seeds[1])
    # Same-size bilinear resizing samples exactly at the pixel centres, so a full-size crop
    # comes back bit-identical after rounding.
    resized = tf.image.resize(crop, shape[:2], method="bilinear")
    return to_uint8(resized, image.shape)


def random_colour(
    image: tf.Tensor,
    seed: tf.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
) -> tf.Tensor:
    """Random brightness, contrast, saturation and hue, applied to the field of view only.

    Cameras, flash settings and pigmentation change a fundus photograph's exposure and
    colour balance but not its grade. Each op is left out of the graph when its strength is
    0. Values are clipped to [0, 1] after every op so the HSV-based ones see valid colours.

    Args:
        image: uint8 (H, W, 3) image.
        seed: shape-[2] integer seed.
        brightness: largest brightness change, as a fraction of full scale, >= 0.
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast], in [0, 1].
        saturation: saturation factor drawn from [1 - saturation, 1 + saturation], in [0, 1].
        hue: largest hue rotation, as a fraction of the colour circle, in [0, 0.5].

    Returns:
        The recoloured uint8 image, same shape; black surround pixels are left as they were.
    """
    if brightness == contrast == saturation == hue == 0:
        return image
    seeds = tf.random.experimental.stateless_split(seed, num=4)
    # The surround is known only from the input: after a brightness shift it is no longer
    # black.
    field_of_view = tf.reduce_max(image, axis=-1, keepdims=True) > BACKGROUND_LEVEL
    colour = tf.cast(image, tf.float32) / 255.0
    if brightness > 0:
        colour = tf.image.stateless_random_brightness(colour, brightness, seeds[0])
        colour = tf.clip_by_value(colour, 0.0, 1.0)
    if contrast > 0:
        factor = tf.random.stateless_uniform(
            [], seeds[1], minval=1.0 - contrast, maxval=1.0 + contrast
        )
        # tf.image's contrast pivots on the whole image's mean, which the black corners
        # (a fifth of the square around the disc) drag towards black, so a contrast change
        # would also dim or brighten the fundus. Pivot on the field of view's own mean.
        weight = tf.cast(field_of_view, tf.float32)
        fov_mean = tf.reduce_sum(colour * weight, axis=[0, 1]) / tf.maximum(
            tf.reduce_sum(weight), 1.0
        )
        colour = tf.clip_by_value((colour - fov_mean) * factor + fov_mean, 0.0, 1.0)
    if saturation > 0:
        colour = tf.image.stateless_random_saturation(
            colour, 1.0 - saturation, 1.0 + saturation, seeds[2]
        )
        colour = tf.clip_by_value(colour, 0.0, 1.0)
    if hue > 0:
        colour = tf.image.stateless_random_hue(colour, hue, seeds[3])
        colour = tf.clip_by_value(colour, 0.0, 1.0)
    recoloured = to_uint8(colour * 255.0, image.shape)
    # A brightness shift would otherwise turn the black surround grey by a different amount
    # in every image. The surround carries no information about the grade, so the model
    # must not be able to learn from it; only the field of view gets the new colours. The
    # surround keeps its input values (not zeros), so it looks exactly as at evaluation,
    # when no augmentation runs.
    return tf.where(field_of_view, recoloured, image)


def validate_augment_config(cfg: AugmentConfig) -> None:
    """Checks every augmentation strength before any graph is built.

    Args:
        cfg: The ``augment`` config group.

    Raises:
        ConfigError: A value is out of range; the message names the key and the range.
    """
    ranges = {
        "rotation_degrees": (0.0, 180.0, "[0, 180]"),
        "crop_scale_min": (0.0, 1.0, "(0, 1]"),
        "brightness": (0.0, math.inf, ">= 0"),
        # A factor range reaching below 0 would invert the image or its saturation.
        "contrast": (0.0, 1.0, "[0, 1]"),
        "saturation": (0.0, 1.0, "[0, 1]"),
        # Hue is a fraction of the colour circle: 0.5 already reaches the opposite colour.
        "hue": (0.0, 0.5, "[0, 0.5]"),
        "rand_augment_layers": (0, 10, "0..10"),
        "rand_augment_magnitude": (0.0, MAX_MAGNITUDE, "[0, 10]"),
        "rand_augment_magnitude_std": (0.0, math.inf, ">= 0"),
        "erase_probability": (0.0, 1.0, "[0, 1]"),
        "mixup_alpha": (0.0, math.inf, ">= 0 (0: off)"),
        "cutmix_alpha": (0.0, math.inf, ">= 0 (0: off)"),
    }
    for key, (low, high, shown) in ranges.items():
        value = getattr(cfg, key)
        number = int if key == "rand_augment_layers" else int | float
        if isinstance(value, bool) or not isinstance(value, number):
            raise ConfigError(f"augment.{key}={value!r} is not a number; use a value in {shown}.")
        low_ok = value > low if key == "crop_scale_min" else value >= low
        if not (low_ok and value <= high and math.isfinite(value)):
            raise ConfigError(f"augment.{key}={value}; use a value in {shown}.")


def augment_image(
    image: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig, background: int = 0
) -> tf.Tensor:
    """The configured augmentations in order: flips, rotation, crop, colour, RandAugment,
    random erasing (timm's order: erasing comes last).

    Geometry comes first so that the colour op's surround mask also covers the black
    corners that rotation brings in. Ops that are off are not added to the graph. Mixup and
    cutmix mix whole batches, in the training step (``retina.data.mixing``).

    Args:
        image: uint8 (H, W, 3) image with H == W.
        seed: shape-[2] integer seed, ``(run seed, element index)`` in training.
        cfg: The ``augment`` config group.
        background: the value of the pixels outside the field of view, which rotation (and
            RandAugment's geometry) fills in (``retina.data.fundus.surround_value``). The crop
            stays inside the image and needs no fill.

    Returns:
        The augmented uint8 image, same shape.

    Raises:
        ConfigError: A strength in ``cfg`` is out of range.
    """
    validate_augment_config(cfg)
    seeds = tf.random.experimental.stateless_split(seed, num=_NUM_OP_SEEDS)
    if cfg.flip:
        image = random_flips(image, seeds[0])
    if cfg.rotation_degrees > 0:
        image = random_rotation(image, seeds[1], cfg.rotation_degrees, background)
    if cfg.crop_scale_min < 1:
        image = random_resized_crop(image, seeds[2], cfg.crop_scale_min)
    if max(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue) > 0:
        image = random_colour(
            image, seeds[3], cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue
        )
    # Folded in rather than split off, so the four ops above draw what they drew before.
    if cfg.rand_augment_layers > 0:
        image = rand_augment(
            image,
            tf.random.experimental.stateless_fold_in(seed, _NUM_OP_SEEDS),
            cfg.rand_augment_layers,
            cfg.rand_augment_magnitude,
            cfg.rand_augment_magnitude_std,
            background,
        )
    if cfg.erase_probability > 0:
        erase_seed = tf.random.experimental.stateless_fold_in(seed, _NUM_OP_SEEDS + 1)
        image = random_erasing(image, erase_seed, cfg.erase_probability)
    return image

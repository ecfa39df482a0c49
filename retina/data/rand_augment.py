"""RandAugment as timm runs it for RETFound (``rand-m9-mstd0.5-inc1``), and random erasing,
as stateless per-scan TF ops.

timm's recipe: ``layers`` times, one of 15 ops is picked uniformly (with replacement) and
applied with probability 1/2 at a magnitude drawn from N(magnitude, magnitude_std) and
clipped to [0, 10]; the "increasing" variants make every op stronger as the magnitude
grows. Each op below reproduces the Pillow function timm calls (``ImageOps``,
``ImageEnhance``, ``Image.transform``); tests compare them with Pillow.

Departures from timm: geometric ops fill with the fundus surround (black, or grey after Ben
Graham preprocessing) rather than the ImageNet mean, so a shifted photograph keeps the
surround it had, and they resample bilinearly (timm picks bilinear or bicubic at random).
Random erasing fills its rectangle with per-pixel noise drawn in normalised space (timm's
``mode="pixel"``), mapped back to uint8 and clipped, because the stream carries uint8
images and the model normalises them itself.
"""

from __future__ import annotations

import math
from functools import partial

import tensorflow as tf

from retina.data.image_ops import affine, rotation, to_uint8

MAX_MAGNITUDE = 10.0
OP_PROBABILITY = 0.5
# Random erasing's rectangle, as timm's RandomErasing defaults.
ERASE_AREA = (0.02, 1 / 3)
ERASE_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))
ERASE_ATTEMPTS = 10
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _luminance(image: tf.Tensor) -> tf.Tensor:
    """Pillow's ``convert("L")``: ITU-R 601-2 luma, rounded, (H, W, 1)."""
    weights = tf.constant([0.299, 0.587, 0.114])
    return tf.round(tf.reduce_sum(image * weights, axis=-1, keepdims=True))


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance``'s ``Image.blend``: degenerate + factor x (image - degenerate),
    clipped and truncated to a level as Pillow does."""
    return tf.floor(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))


def _per_channel(image: tf.Tensor, channel_op) -> tf.Tensor:
    return tf.stack([channel_op(image[..., c]) for c in range(3)], axis=-1)


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
    """``ImageOps.autocontrast``: each channel stretched to 0..255 (a flat one is kept)."""

    def stretch(channel):
        # Pillow's table in double precision: int(level x scale - low x scale).
        channel = tf.cast(channel, tf.float64)
        low, high = tf.reduce_min(channel), tf.reduce_max(channel)
        scale = 255.0 / tf.maximum(high - low, 1.0)
        stretched = tf.floor(channel * scale - low * scale)
        return tf.cast(tf.where(high > low, stretched, channel), tf.float32)

    return _per_channel(image, stretch)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """``ImageOps.equalize``: each channel's histogram flattened through Pillow's table."""

    def flatten(channel):
        levels = tf.cast(channel, tf.int32)
        histogram = tf.math.bincount(levels, minlength=256, maxlength=256)
        last = histogram[tf.reduce_max(tf.where(histogram > 0))]
        step = (tf.reduce_sum(histogram) - last) // 255
        below = tf.cumsum(histogram, exclusive=True)
        table = tf.minimum((below + step // 2) // tf.maximum(step, 1), 255)
        return tf.where(step > 0, tf.cast(tf.gather(table, levels), tf.float32), channel)

    return _per_channel(image, flatten)


def invert(image: tf.Tensor) -> tf.Tensor:
    return 255.0 - image


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """``ImageOps.posterize``: keeps the top ``bits`` bits of each value."""
    step = tf.pow(2.0, 8.0 - tf.cast(bits, tf.float32))
    return tf.floor(image / step) * step


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """``ImageOps.solarize``: values at or above ``threshold`` inverted."""
    return tf.where(image >= threshold, 255.0 - image, image)


def solarize_add(image: tf.Tensor, add: tf.Tensor, threshold: float = 128.0) -> tf.Tensor:
    """timm's ``solarize_add``: ``add`` added to the values below ``threshold``."""
    return tf.where(image < threshold, tf.minimum(image + add, 255.0), image)


def colour(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Color``: blend with the grey image."""
    return _blend(_luminance(image), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Contrast``: blend with the mean grey level, rounded."""
    mean = tf.floor(tf.reduce_mean(_luminance(image)) + 0.5)
    return _blend(mean, image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Brightness``: blend with black."""
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Sharpness``: blend with Pillow's SMOOTH filter (border kept)."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.round(smooth)
    inner = tf.pad(tf.ones_like(smooth[..., :1]), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inner > 0, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return _blend(degenerate, image, factor)


def _geometric(matrix_of):
    """An op ``(image, amount, fill)`` resampling by the affine matrix ``matrix_of(amount,
    height, width)``."""

    def op(image, amount, fill):
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        return affine(image, matrix_of(amount, size[0], size[1]), fill)

    return op


rotate = _geometric(lambda degrees, h, w: rotation(degrees * math.pi / 180.0, h, w))
shear_x = _geometric(lambda shear, h, w: [1.0, shear, 0.0, 0.0, 1.0, 0.0])
shear_y = _geometric(lambda shear, h, w: [1.0, 0.0, 0.0, shear, 1.0, 0.0])
translate_x = _geometric(lambda fraction, h, w: [1.0, 0.0, fraction * w, 0.0, 1.0, 0.0])
translate_y = _geometric(lambda fraction, h, w: [1.0, 0.0, 0.0, 0.0, 1.0, fraction * h])


def _signed(value: tf.Tensor, negative: tf.Tensor) -> tf.Tensor:
    return tf.where(negative, -value, value)


def enhance(level: tf.Tensor, negative: tf.Tensor) -> tf.Tensor:
    """timm's ``_enhance_increasing_level``: a factor 1 +- 0.9 x level."""
    return 1.0 + _signed(0.9 * level, negative)


def _ops(fill: float) -> list:
    """timm's ``_RAND_INCREASING_TRANSFORMS`` as ``op(image, level, negative)``: level in
    [0, 1] is magnitude / 10, ``negative`` the random sign of the signed ones."""
    return [
        lambda image, level, negative: auto_contrast(image),
        lambda image, level, negative: equalize(image),
        lambda image, level, negative: invert(image),
        lambda image, level, negative: rotate(image, _signed(30.0 * level, negative), fill),
        lambda image, level, negative: posterize(image, 4 - tf.floor(4 * level)),
        lambda image, level, negative: solarize(image, 256 - tf.floor(256 * level)),
        lambda image, level, negative: solarize_add(image, tf.floor(110 * level)),
        lambda image, level, negative: colour(image, enhance(level, negative)),
        lambda image, level, negative: contrast(image, enhance(level, negative)),
        lambda image, level, negative: brightness(image, enhance(level, negative)),
        lambda image, level, negative: sharpness(image, enhance(level, negative)),
        lambda image, level, negative: shear_x(image, _signed(0.3 * level, negative), fill),
        lambda image, level, negative: shear_y(image, _signed(0.3 * level, negative), fill),
        lambda image, level, negative: translate_x(image, _signed(0.45 * level, negative), fill),
        lambda image, level, negative: translate_y(image, _signed(0.45 * level, negative), fill),
    ]


def rand_augment(
    image: tf.Tensor,
    seed: tf.Tensor,
    layers: int,
    magnitude: float,
    magnitude_std: float,
    fill: int = 0,
) -> tf.Tensor:
    """``layers`` random ops of timm's increasing RandAugment, each applied with
    probability 1/2 at magnitude N(magnitude, magnitude_std) clipped to [0, 10].

    Args:
        image: uint8 (H, W, 3) image.
        seed: shape-[2] integer seed.
        layers: how many ops are drawn (timm's ``n``).
        magnitude: their mean magnitude, 0..10 (timm's ``m``).
        magnitude_std: the spread of the magnitude (timm's ``mstd``).
        fill: the surround's value, given to the pixels geometric ops bring in.

    Returns:
        The augmented uint8 image, same shape.
    """
    ops = _ops(fill)
    result = tf.cast(image, tf.float32)
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num=layers)):
        result = _one_layer(result, layer_seed, ops, magnitude, magnitude_std)
    return to_uint8(result, image.shape)


def _one_layer(image, seed, ops: list, magnitude: float, magnitude_std: float) -> tf.Tensor:
    """One drawn op, applied with probability 1/2, its output rounded to levels as
    Pillow's uint8 images are between ops."""
    draws = tf.random.experimental.stateless_split(seed, num=4)
    which = tf.random.stateless_uniform([], draws[0], maxval=len(ops), dtype=tf.int32)
    noisy = magnitude + magnitude_std * tf.random.stateless_normal([], draws[1])
    level = tf.clip_by_value(noisy, 0.0, MAX_MAGNITUDE) / MAX_MAGNITUDE
    negative = tf.random.stateless_uniform([], draws[2]) < 0.5
    applied = tf.random.stateless_uniform([], draws[3]) < OP_PROBABILITY
    changed = tf.switch_case(which, [partial(op, image, level, negative) for op in ops])
    return tf.where(applied, tf.clip_by_value(tf.round(changed), 0.0, 255.0), image)


def random_erasing(image: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """timm's ``RandomErasing`` (``mode="pixel"``, one rectangle): with ``probability``, a
    rectangle of 2-33% of the image with aspect ratio in [0.3, 3.3] is filled with noise.

    Up to 10 rectangles are drawn; the first that fits inside the image is erased (none
    fits: the image is kept), as timm's attempts.
    """
    draws = tf.random.experimental.stateless_split(seed, num=5)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    area = tf.cast(height * width, tf.float32) * tf.random.stateless_uniform(
        [ERASE_ATTEMPTS], draws[0], *ERASE_AREA
    )
    aspect = tf.exp(tf.random.stateless_uniform([ERASE_ATTEMPTS], draws[1], *ERASE_LOG_ASPECT))
    rows = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    cols = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (rows < height) & (cols < width)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    rows, cols = rows[first], cols[first]
    corner = tf.random.stateless_uniform([2], draws[2])
    top = tf.cast(corner[0] * tf.cast(height - rows + 1, tf.float32), tf.int32)
    left = tf.cast(corner[1] * tf.cast(width - cols + 1, tf.float32), tf.int32)
    row_index, col_index = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = (row_index >= top) & (row_index < top + rows)
    inside &= (col_index >= left) & (col_index < left + cols)
    noise = tf.random.stateless_normal(shape, draws[3]) * IMAGENET_STD + IMAGENET_MEAN
    noise = to_uint8(noise * 255.0, image.shape)
    erase = tf.reduce_any(fits) & (tf.random.stateless_uniform([], draws[4]) < probability)
    return tf.where(erase & inside[..., None], noise, image)

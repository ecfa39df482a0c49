"""Small TF image helpers the augmentation modules share: affine resampling and rounding back
to uint8."""

from __future__ import annotations

import tensorflow as tf


def to_uint8(image: tf.Tensor, shape: tf.TensorShape) -> tf.Tensor:
    """Rounds and clips float pixel values in [0, 255] to uint8, keeping the static shape."""
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    image.set_shape(shape)
    return image


def affine(image: tf.Tensor, matrix: list, fill: float) -> tf.Tensor:
    """Bilinear resampling of a float (H, W, C) image by an affine map.

    ``matrix`` is ``[a, b, c, d, e, f]``: output pixel (x, y) samples the input at
    (a x + b y + c, d x + e y + f), pixel centres at integer coordinates (the convention of
    PIL's ``Image.transform(AFFINE)``). Points from outside the image get ``fill``.
    """
    transform = tf.stack([tf.cast(value, tf.float32) for value in matrix] + [0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2],
        fill_value=float(fill),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]


def rotation(angle: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> list:
    """The affine ``matrix`` (see ``affine``) of a rotation by ``angle`` radians about the
    image centre, ((W-1)/2, (H-1)/2) with pixel centres at integer coordinates."""
    cos, sin = tf.cos(angle), tf.sin(angle)
    centre_x, centre_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    return [
        cos,
        -sin,
        centre_x - cos * centre_x + sin * centre_y,
        sin,
        cos,
        centre_y - sin * centre_x - cos * centre_y,
    ]

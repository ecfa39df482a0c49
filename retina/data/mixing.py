"""Mixup and cutmix over a training batch, as timm's ``Mixup`` in its default ``batch`` mode,
seeded by the training step so a resumed run mixes exactly as the uninterrupted one.

Each batch is mixed with itself reversed (scan i with scan B-1-i; under a distribution
strategy, within each replica's share of the batch) by one weight ``lam`` drawn from
Beta(alpha, alpha): mixup blends the whole images, cutmix pastes a box of the partner
covering a share 1 - lam of the image (``lam`` is then corrected to the box's real area,
which clipping at the border may shrink). With both alphas set, each batch uses one
of the two with probability 1/2. The loss is ``lam x loss(own grades) + (1 - lam) x
loss(partner's grades)``, for every head: for a softmax that is the cross-entropy against
timm's mixed (smoothed) one-hot targets, and it gives ordinal and regression heads their
mixed targets too.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from retina.config import AugmentConfig
from retina.data.image_ops import to_uint8


@dataclass(frozen=True)
class Mixing:
    """The run seed and the two Beta parameters: what the training step mixes with."""

    seed: int
    mixup_alpha: float
    cutmix_alpha: float

    @classmethod
    def from_config(cls, augment: AugmentConfig, seed: int) -> Mixing | None:
        """None when both alphas are 0 (the batch is left as it is)."""
        if augment.mixup_alpha <= 0 and augment.cutmix_alpha <= 0:
            return None
        return cls(seed, augment.mixup_alpha, augment.cutmix_alpha)


def beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """One draw from Beta(alpha, alpha), as the ratio of two Gamma(alpha) draws."""
    gammas = tf.random.stateless_gamma([2], seed, alpha)
    return gammas[0] / (gammas[0] + gammas[1])


def mixup(images: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """lam x images + (1 - lam) x the reversed batch, rounded to uint8."""
    own = tf.cast(images, tf.float32)
    return to_uint8(lam * own + (1.0 - lam) * tf.reverse(own, [0]), images.shape)


def cutmix(images: tf.Tensor, lam: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The batch with a box of the reversed batch pasted in, and the share of each image
    still its own (timm's ``rand_bbox`` and ``correct_lam``)."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
    centre_seeds = tf.random.experimental.stateless_split(seed, num=2)
    centre_y = tf.random.stateless_uniform([], centre_seeds[0], maxval=height, dtype=tf.int32)
    centre_x = tf.random.stateless_uniform([], centre_seeds[1], maxval=width, dtype=tf.int32)
    top = tf.clip_by_value(centre_y - cut_h // 2, 0, height)
    bottom = tf.clip_by_value(centre_y + cut_h // 2, 0, height)
    left = tf.clip_by_value(centre_x - cut_w // 2, 0, width)
    right = tf.clip_by_value(centre_x + cut_w // 2, 0, width)
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    mixed = tf.where(box[None, :, :, None], tf.reverse(images, [0]), images)
    area = tf.cast((bottom - top) * (right - left), tf.float32)
    return mixed, 1.0 - area / tf.cast(height * width, tf.float32)


def mix_batch(
    images: tf.Tensor, seed: tf.Tensor, mixup_alpha: float, cutmix_alpha: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """The mixed uint8 batch and ``lam``, the weight of each scan's own grade.

    Args:
        images: uint8 (B, H, W, 3) batch.
        seed: shape-[2] integer seed, ``(run seed, step)`` in training.
        mixup_alpha: Beta parameter of mixup (0: off).
        cutmix_alpha: Beta parameter of cutmix (0: off).
    """
    draws = tf.random.experimental.stateless_split(seed, num=3)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], draws[0]) < 0.5
        lam = tf.where(use_cutmix, beta(draws[1], cutmix_alpha), beta(draws[1], mixup_alpha))
        return tf.cond(
            use_cutmix, lambda: cutmix(images, lam, draws[2]), lambda: (mixup(images, lam), lam)
        )
    if cutmix_alpha > 0:
        return cutmix(images, beta(draws[1], cutmix_alpha), draws[2])
    lam = beta(draws[1], mixup_alpha)
    return mixup(images, lam), lam

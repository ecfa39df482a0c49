"""Augmentations as pure TF ops, seeded per element so a resumed stream is exact.

Every op takes an explicit ``seed`` (a shape-[2] int tensor) and uses TF's stateless
random ops: the same element index always gets the same augmentation, eagerly or inside
tf.data, and nothing but the iterator position needs checkpointing.
"""

from __future__ import annotations

import tensorflow as tf


def random_flips(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Left-right and up-down flips, each with probability 1/2.

    A left-right flip turns a right-eye photograph into a plausible left-eye one; DR
    grading does not depend on laterality or orientation.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    return tf.image.stateless_random_flip_up_down(image, seeds[1])

"""tf.data streams over the preprocessed cache: pure TF ops only, so the iterator can be
checkpointed and never takes the GIL."""

from __future__ import annotations

import tensorflow as tf

from retina.data.augment import random_flips

AUTOTUNE = tf.data.AUTOTUNE


def decode_cached(path: tf.Tensor) -> tf.Tensor:
    """A cached PNG as a uint8 (size, size, 3) tensor; the model does its own scaling."""
    return tf.io.decode_png(tf.io.read_file(path), channels=3)


def make_train_dataset(
    paths: list[str], labels: list[int], batch_size: int, seed: int, augment: bool = True
) -> tf.data.Dataset:
    """An endless, reshuffled-every-epoch stream of (images, labels) batches.

    The stream never ends, so one iterator spans the whole run and its checkpointed state
    is the exact data position, mid-epoch included. Epoch e is elements
    [e * steps_per_epoch * batch_size, ...) of it.
    """
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
    dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.enumerate()

    def load(index, element):
        path, label = element
        image = decode_cached(path)
        if augment:
            image = random_flips(image, tf.stack([tf.cast(seed, tf.int64), index]))
        return image, label

    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def make_eval_dataset(paths: list[str], labels: list[int], batch_size: int) -> tf.data.Dataset:
    """One ordered pass over the scans, last batch kept."""
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
    dataset = dataset.map(lambda p, y: (decode_cached(p), y), num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)

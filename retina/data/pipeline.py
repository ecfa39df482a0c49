"""tf.data streams over the preprocessed cache: pure TF ops only, so the iterator can be
checkpointed and never takes the GIL.

The training stream shuffles *indices* into the scan list, then loads each scan either
from the cached PNG or, when the decoded training set fits in ``train.memory_cache_mb``,
from one uint8 tensor decoded once at start-up. ``Dataset.cache()`` is not used: its
iterator state is the cache itself, so every checkpoint would carry the whole data set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from retina.config import AugmentConfig, Sampler, require_choice
from retina.data.augment import augment_image

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class StreamOptions:
    """How the training stream runs; none of it changes which scans an epoch holds."""

    sampler: str = "shuffle"
    memory_cache_mb: int = 0
    deterministic: bool = True
    worker_index: int = 0  # this worker's slice of every global batch ...
    num_workers: int = 1  # ... out of this many (trainer.strategy=multi_worker)
    background: int = 0  # the cached images' surround, which augmentation fills in


def decode_cached(path: tf.Tensor) -> tf.Tensor:
    """A cached PNG or JPEG as a uint8 (size, size, 3) tensor; the model does its own
    scaling."""
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def load_into_memory(paths: list[str], budget_mb: int) -> tf.Tensor | None:
    """All scans decoded into one (N, size, size, 3) uint8 tensor, or None when the
    estimate from the first scan exceeds ``budget_mb``."""
    if budget_mb <= 0 or not paths:
        return None
    first = decode_cached(tf.constant(paths[0]))
    needed_mb = len(paths) * int(np.prod(first.shape)) / 2**20
    if needed_mb > budget_mb:
        log.info(
            "Streaming scans from the cache: decoded they need %.0f MB, over "
            "train.memory_cache_mb=%d.",
            needed_mb,
            budget_mb,
        )
        return None
    decoded = tf.data.Dataset.from_tensor_slices(paths).map(
        decode_cached, num_parallel_calls=AUTOTUNE
    )
    return tf.concat(list(decoded.batch(256)), axis=0)


def _shuffled_indices(labels: np.ndarray, seed: int, sampler: str) -> tf.data.Dataset:
    """Endless scan indices: reshuffled passes, or classes drawn with equal probability."""
    if require_choice("train.sampler", sampler, Sampler) == Sampler.shuffle:
        count = len(labels)
        indices = tf.data.Dataset.range(count)
        return indices.shuffle(count, seed=seed, reshuffle_each_iteration=True).repeat()
    per_class = [
        tf.data.Dataset.from_tensor_slices(np.flatnonzero(labels == grade).astype(np.int64))
        .shuffle(int((labels == grade).sum()), seed=seed + grade, reshuffle_each_iteration=True)
        .repeat()
        for grade in np.unique(labels)
    ]
    # Stateless choices from the draw's position: the iterator position alone fixes them.
    choices = tf.data.Dataset.range(2**62).map(
        lambda i: tf.random.stateless_uniform(
            [], tf.stack([tf.cast(seed, tf.int64), i]), maxval=len(per_class), dtype=tf.int64
        )
    )
    return tf.data.Dataset.choose_from_datasets(per_class, choices)


def make_train_dataset(
    paths: list[str],
    labels: list[int],
    batch_size: int,
    seed: int,
    augment: AugmentConfig | None = None,
    options: StreamOptions | None = None,
) -> tf.data.Dataset:
    """An endless stream of this worker's (images, labels) batches.

    The stream never ends, so one iterator spans the whole run and its checkpointed state
    is the exact data position, mid-epoch included. Every worker draws the same global
    batches of ``batch_size`` scan indices and loads only its own slice of each, so each
    scan is seen once per epoch whatever the number of workers, and element ``i`` of the
    global stream is augmented with the seed ``(seed, i)`` on whichever worker loads it.

    Checkpoints are symbolic: they hold positions, not buffered images, so the iterator
    state is the same on every worker and restores into any worker count.
    """
    options = options or StreamOptions()
    labels = np.asarray(labels, np.int32)
    images = load_into_memory(paths, options.memory_cache_mb)
    path_table, label_table = tf.constant(paths), tf.constant(labels)
    worker_batch = batch_size // options.num_workers
    first = options.worker_index * worker_batch
    dataset = _shuffled_indices(labels, seed, options.sampler).enumerate()
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(
        lambda p, i: (p[first : first + worker_batch], i[first : first + worker_batch])
    )

    def load(position, index):
        if images is not None:
            image = tf.gather(images, index)
        else:
            image = decode_cached(tf.gather(path_table, index))
        if augment is not None:
            element_seed = tf.stack([tf.cast(seed, tf.int64), position])
            image = augment_image(image, element_seed, augment, options.background)
        return image, tf.gather(label_table, index)

    dataset = dataset.unbatch().map(
        load, num_parallel_calls=AUTOTUNE, deterministic=options.deterministic
    )
    dataset = dataset.batch(worker_batch, drop_remainder=True).prefetch(AUTOTUNE)
    symbolic = tf.data.Options()
    symbolic.experimental_symbolic_checkpoint = True
    return dataset.with_options(symbolic)


def make_eval_dataset(paths: list[str], labels: list[int], batch_size: int) -> tf.data.Dataset:
    """One ordered pass over the scans, last batch kept."""
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
    dataset = dataset.map(lambda p, y: (decode_cached(p), y), num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)

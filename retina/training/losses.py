"""Training losses from ``loss=``: cross-entropy with label smoothing and class weights.

Labels in the stream are always ICDR grades; a ``referable`` head trains on grade >= 2.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from retina.config import LossConfig
from retina.errors import ConfigError
from retina.icdr import REFERABLE_MIN_GRADE


def training_targets(grades: tf.Tensor, head: str) -> tf.Tensor:
    """The class index each logit vector is trained towards."""
    if head == "referable":
        return tf.cast(grades >= REFERABLE_MIN_GRADE, tf.int32)
    return tf.cast(grades, tf.int32)


def class_weights(spec: str, targets: np.ndarray, num_outputs: int) -> np.ndarray | None:
    """``none``; ``balanced`` (N / (classes x count), so weights average 1 over the
    training split; a class absent from it gets 0); or one comma-separated weight per
    class, e.g. ``1,1,2,2,3``."""
    if spec == "none":
        return None
    if spec == "balanced":
        counts = np.bincount(targets, minlength=num_outputs).astype(np.float64)
        weights = np.where(counts > 0, len(targets) / (num_outputs * np.maximum(counts, 1)), 0)
        return weights.astype(np.float32)
    try:
        weights = np.array([float(w) for w in spec.split(",")], np.float32)
    except ValueError:
        weights = np.array([])
    if len(weights) != num_outputs or (weights < 0).any():
        raise ConfigError(
            f"loss.class_weights={spec!r}; use none, balanced, or {num_outputs} "
            "non-negative comma-separated numbers (one per output class)."
        )
    return weights


def make_loss(cfg: LossConfig, head: str, num_outputs: int, train_grades: np.ndarray):
    """``loss(grades, logits) -> scalar``: mean (weighted) softmax cross-entropy."""
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"loss.label_smoothing={cfg.label_smoothing}; use a value in [0, 1).")
    targets = training_targets(np.asarray(train_grades), head)
    weights = class_weights(cfg.class_weights, np.asarray(targets), num_outputs)

    def loss(grades, logits):
        targets = training_targets(grades, head)
        onehot = tf.one_hot(targets, num_outputs)
        smoothed = onehot * (1.0 - cfg.label_smoothing) + cfg.label_smoothing / num_outputs
        per_scan = tf.nn.softmax_cross_entropy_with_logits(smoothed, tf.cast(logits, tf.float32))
        if weights is not None:
            per_scan *= tf.gather(tf.constant(weights), targets)
        return tf.reduce_mean(per_scan)

    return loss

"""Training losses from ``loss=`` and ``model.head``: softmax cross-entropy with label
smoothing (softmax, referable), summed binary cross-entropies of the ordinal tasks (CORAL),
of the conditional ones (CORN), or the squared error of the regressed grade; class weights
weigh each scan by its grade (or referable class) in all of them.

Labels in the stream are always ICDR grades; a ``referable`` head trains on grade >= 2.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import tensorflow as tf

from retina.config import LossConfig
from retina.errors import ConfigError
from retina.icdr import NUM_GRADES, REFERABLE_MIN_GRADE
from retina.models.grading import ORDINAL_HEADS


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
    """``loss(grades, outputs) -> scalar``: the mean (weighted) loss of ``head``, whose model
    has ``num_outputs`` outputs; class weights are per output class of a softmax head, per
    grade of an ordinal one."""
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"loss.label_smoothing={cfg.label_smoothing}; use a value in [0, 1).")
    if cfg.label_smoothing and head in ORDINAL_HEADS:
        raise ConfigError(
            f"loss.label_smoothing={cfg.label_smoothing} smooths a softmax; model.head={head} "
            "has none. Set loss.label_smoothing=0 or model.head=softmax."
        )
    classes = NUM_GRADES if head in ORDINAL_HEADS else num_outputs  # what a weight is per
    targets = training_targets(np.asarray(train_grades), head)
    weights = class_weights(cfg.class_weights, np.asarray(targets), classes)
    per_scan_loss = {
        "coral": coral_losses,
        "corn": corn_losses,
        "regression": squared_errors,
    }.get(head, partial(smoothed_cross_entropies, smoothing=cfg.label_smoothing))

    def loss(grades, outputs):
        targets = training_targets(grades, head)
        per_scan, counted = per_scan_loss(targets, tf.cast(outputs, tf.float32))
        if weights is not None:
            per_scan *= tf.gather(tf.constant(weights), targets)
        return tf.reduce_sum(per_scan) / counted

    return loss


def smoothed_cross_entropies(targets, logits, smoothing: float = 0.0):
    """(per-scan softmax cross-entropy with label smoothing, scans)."""
    classes = logits.shape[-1]
    smoothed = tf.one_hot(targets, classes) * (1.0 - smoothing) + smoothing / classes
    per_scan = tf.nn.softmax_cross_entropy_with_logits(smoothed, logits)
    return per_scan, tf.cast(tf.size(targets), tf.float32)


def coral_losses(grades, logits):
    """(per-scan sum over k of the binary cross-entropy of grade > k, scans): CORAL's loss
    (coral_pytorch ``coral_loss`` with unit task weights)."""
    above = tf.cast(grades[:, None] > tf.range(logits.shape[-1])[None, :], tf.float32)
    per_task = tf.nn.sigmoid_cross_entropy_with_logits(labels=above, logits=logits)
    return tf.reduce_sum(per_task, axis=1), tf.cast(tf.size(grades), tf.float32)


def corn_losses(grades, logits):
    """(per-scan sum of the conditional tasks' binary cross-entropies, the number of task
    examples): task k learns grade > k from the scans of grade >= k only, and the sum is
    divided by how many (scan, task) examples there are (coral_pytorch ``corn_loss``)."""
    tasks = tf.range(logits.shape[-1])[None, :]
    in_task = tf.cast(grades[:, None] >= tasks, tf.float32)
    above = tf.cast(grades[:, None] > tasks, tf.float32)
    per_task = tf.nn.sigmoid_cross_entropy_with_logits(labels=above, logits=logits) * in_task
    return tf.reduce_sum(per_task, axis=1), tf.maximum(tf.reduce_sum(in_task), 1.0)


def squared_errors(grades, outputs):
    """(per-scan squared error of the regressed grade, scans)."""
    per_scan = tf.square(outputs[:, 0] - tf.cast(grades, tf.float32))
    return per_scan, tf.cast(tf.size(grades), tf.float32)

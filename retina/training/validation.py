"""Validation: predictions sharded across the replicas of a strategy, and the grading an
ordinal or regression head fits on them.

With one replica the split is scored in order, as ``retina.inference.outputs`` does. Under
``mirrored`` or ``multi_worker`` every replica scores its own share of the scans (tf.data
shards the elements across workers, then each global batch across local replicas), and
the predictions are gathered once, so each scan is scored once in all, not once per
worker. Each scan carries its position through the pipeline, and the gathered
predictions are put back in that order.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import tensorflow as tf

from retina.config import GradeThresholds
from retina.data.pipeline import AUTOTUNE, decode_cached, make_eval_dataset
from retina.icdr import GRADE_BOUNDARIES, REFERABLE_MIN_GRADE
from retina.inference.outputs import predict_dataset
from retina.metrics.calibration import fit_logistic
from retina.metrics.cut_points import fit_cut_points
from retina.metrics.rates import is_referable
from retina.models.grading import DEFAULT_LINK, Grading, expected_grades
from retina.training.distribute import Placement

log = logging.getLogger(__name__)


def predict_validation(
    placement: Placement, model, output_step, paths: list[str], grades, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(grades, the model's outputs) of the scans at ``paths``, in their order."""
    if placement.num_replicas == 1:
        return predict_dataset(output_step, make_eval_dataset(paths, grades, batch_size))
    return predict_across_replicas(placement, model, paths, grades, batch_size)


def _indexed_dataset(paths: list[str], grades, batch_size: int) -> tf.data.Dataset:
    positions = tf.range(len(paths), dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((positions, paths, tf.constant(grades, tf.int32)))
    dataset = dataset.map(lambda i, p, y: (i, decode_cached(p), y), num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.batch(batch_size).with_options(options)


def predict_across_replicas(
    placement: Placement, model, paths: list[str], grades, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each replica scores its share; every worker gets all the predictions back."""
    strategy = placement.strategy
    distributed = strategy.experimental_distribute_dataset(
        _indexed_dataset(paths, grades, batch_size)
    )

    def score(positions, images, labels):
        return positions, labels, tf.cast(model(images, training=False), tf.float32)

    @tf.function
    def step(batch):
        per_replica = strategy.run(score, args=batch)
        local = sum(tf.size(t) for t in strategy.experimental_local_results(per_replica[0]))
        return [strategy.gather(value, axis=0) for value in per_replica], local

    gathered, scored_here = [], 0
    for batch in distributed:
        values, local = step(batch)
        gathered.append([value.numpy() for value in values])
        scored_here += int(local)
    positions, labels, outputs = (np.concatenate(part) for part in zip(*gathered, strict=True))
    log.info(
        "Validation: %d of %d scans scored on worker %d.",
        scored_here,
        len(paths),
        placement.worker_index,
    )
    order = np.argsort(positions, kind="stable")
    return labels[order], outputs[order]


def fit_grading(head: str, thresholds: str, grades, outputs: np.ndarray) -> Grading:
    """``head``'s grading fitted on the validation scans: the regression link (a logistic of
    grade >= 2 on the regressed grade), then with ``grading.thresholds=fitted`` the
    cut-points of the expected grade with the highest kappa. Where a fit is undefined (a
    split of one class or one grade), the head's defaults."""
    grading = Grading(head)
    if not grading.ordinal:
        return grading
    if head == "regression":
        grading = replace(grading, link=regression_link(np.asarray(grades), outputs[:, 0]))
    if thresholds == GradeThresholds.fitted:
        expected = expected_grades(grading.probabilities(outputs).numpy())
        grading = replace(grading, cut_points=fit_cut_points(expected, grades))
    return grading


def regression_link(grades: np.ndarray, outputs: np.ndarray) -> tuple[float, float]:
    """(slope, shift) of ``Grading``'s regression link from a logistic fit of grade >= 2 on
    the output: sigmoid(a r + b) = sigmoid(a (r - 1.5) + (b + 1.5 a))."""
    try:
        slope, intercept = fit_logistic(is_referable(grades), outputs)
    except ValueError:
        return DEFAULT_LINK
    if slope <= 0:  # a link must rise with the grade; a split this small cannot say how
        return DEFAULT_LINK
    return slope, intercept + slope * GRADE_BOUNDARIES[REFERABLE_MIN_GRADE - 1]

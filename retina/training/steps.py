"""The compiled train and predict functions."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from retina.checkpoint import TrainingState
from retina.training.distribute import Placement, split_for_replicas
from retina.training.ema import WeightAverage
from retina.training.losses import training_targets


@dataclass
class StepParts:
    """What a train function is built from."""

    model: keras.Model
    optimizers: dict
    groups: dict  # optimizer name -> the variables it updates
    loss: object  # (grades, logits) -> scalar, see retina.training.losses
    state: TrainingState
    loss_scaling: bool
    head: str = "grades"
    ema: WeightAverage | None = None
    jit_compile: bool = False
    placement: Placement = field(default_factory=lambda: Placement(tf.distribute.get_strategy()))


def batchnorm_statistics(model: keras.Model) -> list:
    return [v for v in model.non_trainable_variables if "moving_" in v.path]


def all_finite(tensors) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def agree_on_finite(gradients: list, locally_finite: tf.Tensor) -> list:
    """Makes every replica's gradients non-finite when any replica's are.

    Each replica's loss-scale optimizer decides to skip from its own, not yet all-reduced,
    gradients; if only one replica overflowed, the others would apply a step (and wait in
    its all-reduce) that this one skips. Adding NaN everywhere makes them all skip.
    """
    context = tf.distribute.get_replica_context()
    overflowed = tf.cast(tf.logical_not(locally_finite), tf.float32)
    overflowed_anywhere = context.all_reduce(tf.distribute.ReduceOp.SUM, overflowed) > 0
    poison = tf.where(overflowed_anywhere, float("nan"), 0.0)
    return [g + tf.cast(poison, g.dtype) for g in gradients]


def make_single_step(parts: StepParts):
    """One GradientTape step on a replica's batch; returns (loss, accuracy, applied).

    Each optimizer updates its own variable group. ``scale_loss`` multiplies by that
    optimizer's loss scale under a LossScaleOptimizer (identity otherwise), and ``apply``
    unscales, skips non-finite steps and updates the scale; with two optimizers each keeps
    its own scale, so the tape is persistent and asked once per optimizer. Groups whose
    variables are all frozen are left out. Under a strategy the replica's mean loss is
    divided by the replica count (the global-batch mean once the optimizer sums gradients
    across replicas).
    """
    replicas = parts.placement.num_replicas
    trainable = {id(v) for v in parts.model.trainable_variables}
    groups = {
        name: [v for v in variables if id(v) in trainable]
        for name, variables in parts.groups.items()
    }
    names = [name for name in groups if groups[name]]
    guarded = batchnorm_statistics(parts.model) if parts.loss_scaling else []

    def step(images, grades):
        # The forward pass moves BatchNorm statistics at once; if the loss-scale optimizer
        # then skips the step, they go back, so a skipped batch leaves no trace.
        before = [tf.identity(v) for v in guarded]
        with tf.GradientTape(persistent=len(names) > 1) as tape:
            logits = parts.model(images, training=True)
            loss = parts.loss(grades, logits)
            scaled = [parts.optimizers[name].scale_loss(loss / replicas) for name in names]
        applied = tf.constant(True)
        for name, scaled_loss in zip(names, scaled, strict=True):
            gradients = tape.gradient(scaled_loss, groups[name])
            if parts.loss_scaling:  # otherwise nothing skips: a non-finite loss stops the run
                finite = all_finite(gradients)
                if replicas > 1:
                    gradients = agree_on_finite(gradients, finite)
                    finite = all_finite(gradients)
                applied = tf.logical_and(applied, finite)
            parts.optimizers[name].apply(gradients, groups[name])
        for variable, value in zip(guarded, before, strict=True):
            variable.assign(tf.where(applied, variable, value))
        predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
        hits = tf.equal(predicted, training_targets(grades, parts.head))
        return loss, tf.reduce_mean(tf.cast(hits, tf.float32)), applied

    return tf.function(step, jit_compile=parts.jit_compile)


def make_train_function(parts: StepParts):
    """``run(iterator, count)``: ``count`` steps in one call, batches drawn inside the graph
    (as ``model.fit`` does), the step counter and epoch sums updated there too.

    Returns per-step (losses, accuracies, applied) tensors of length ``count``: global-batch
    means, the same on every worker.
    """
    single_step = make_single_step(parts)
    state, placement = parts.state, parts.placement
    strategy, totals = placement.strategy, state.epoch_totals
    mean = tf.distribute.ReduceOp.MEAN

    @tf.function
    def run(iterator, count: int):
        losses = tf.TensorArray(tf.float32, size=count)
        accuracies = tf.TensorArray(tf.float32, size=count)
        applied = tf.TensorArray(tf.bool, size=count)
        for index in tf.range(count):
            batch = split_for_replicas(placement, *next(iterator))
            loss, accuracy, ok = strategy.run(single_step, args=batch)
            loss, accuracy = (
                strategy.reduce(mean, loss, None),
                strategy.reduce(mean, accuracy, None),
            )
            ok = strategy.experimental_local_results(ok)[0]  # agreed on by every replica
            if parts.ema is not None:
                parts.ema.update(state.step)
            state.step.assign_add(1)
            state.skipped_steps.assign_add(tf.cast(tf.logical_not(ok), tf.int64))
            finite_loss = tf.where(tf.math.is_finite(loss), loss, 0.0)
            totals["loss"].assign_add(tf.cast(finite_loss, tf.float64))
            totals["accuracy"].assign_add(tf.cast(accuracy, tf.float64))
            totals["steps"].assign_add(1.0)
            losses = losses.write(index, loss)
            accuracies = accuracies.write(index, accuracy)
            applied = applied.write(index, ok)
        return losses.stack(), accuracies.stack(), applied.stack()

    return run


def make_predict_step(model: keras.Model, tta: bool = False):
    """Softmax outputs of a batch; with ``tta``, averaged over the four flips."""
    views = [lambda x: x]
    if tta:
        views += [
            lambda x: tf.reverse(x, [2]),
            lambda x: tf.reverse(x, [1]),
            lambda x: tf.reverse(x, [1, 2]),
        ]

    @tf.function
    def predict_step(images):
        outputs = [
            tf.nn.softmax(tf.cast(model(view(images), training=False), tf.float32))
            for view in views
        ]
        return tf.add_n(outputs) / len(outputs)

    return predict_step


def predict_dataset(predict_step, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Runs a finite (images, grades) dataset through the model: (grades, probabilities)."""
    grades, probabilities = [], []
    for images, labels in dataset:
        probabilities.append(predict_step(images).numpy())
        grades.append(labels.numpy())
    return np.concatenate(grades), np.concatenate(probabilities)

"""The compiled training step: ``make_train_function(state, ...)``."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from retina.checkpoint.state import TrainingState
from retina.data.mixing import Mixing, mix_batch
from retina.models.grading import Grading
from retina.training.distribute import Placement, split_for_replicas
from retina.training.losses import training_targets


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


def has_loss_scaling(optimizers: dict) -> bool:
    """Whether the optimizers scale the loss (mixed_float16): then a step may be skipped."""
    return any(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in optimizers.values())


def mixed_batch_loss(loss: Callable, mixing: Mixing | None, step: tf.Variable) -> Callable:
    """``(images, grades) -> (images, loss_of(logits))``: the batch as the model sees it and
    its loss; with mixup or cutmix on, the batch mixed by the step's draw and the loss
    weighed between each scan's grade and its partner's (``retina.data.mixing``)."""

    def prepare(images, grades):
        if mixing is None:
            return images, lambda logits: loss(grades, logits)
        seed = tf.stack([tf.constant(mixing.seed, tf.int64), tf.cast(step, tf.int64)])
        images, own = mix_batch(images, seed, mixing.mixup_alpha, mixing.cutmix_alpha)
        partners = tf.reverse(grades, [0])
        return (
            images,
            lambda logits: own * loss(grades, logits) + (1 - own) * loss(partners, logits),
        )

    return prepare


def make_single_step(
    state: TrainingState,
    groups: dict,
    loss: Callable,
    placement: Placement,
    head: str = "softmax",
    jit_compile: bool = False,
    mixing: Mixing | None = None,
):
    """One GradientTape step on a replica's batch; returns (loss, accuracy, applied).

    Each optimizer updates its own variable group. ``scale_loss`` multiplies by that
    optimizer's loss scale under a LossScaleOptimizer (identity otherwise), and ``apply``
    unscales, skips non-finite steps and updates the scale; with two optimizers each keeps
    its own scale, so the tape is persistent and asked once per optimizer. Groups whose
    variables are all frozen are left out. Under a strategy the replica's mean loss is
    divided by the replica count (the global-batch mean once the optimizer sums gradients
    across replicas).
    """
    model, optimizers = state.model, state.optimizers
    replicas, loss_scaling = placement.num_replicas, has_loss_scaling(optimizers)
    trainable = {id(v) for v in model.trainable_variables}
    groups = {
        name: [v for v in variables if id(v) in trainable] for name, variables in groups.items()
    }
    names = [name for name in groups if groups[name]]
    guarded = batchnorm_statistics(model) if loss_scaling else []
    grading = Grading(head)  # the head's own rule: the running accuracy needs no fitted values
    prepare = mixed_batch_loss(loss, mixing, state.step)

    def step(images, grades):
        # The forward pass moves BatchNorm statistics at once; if the loss-scale optimizer
        # then skips the step, they go back, so a skipped batch leaves no trace.
        before = [tf.identity(v) for v in guarded]
        images, loss_of = prepare(images, grades)
        with tf.GradientTape(persistent=len(names) > 1) as tape:
            logits = model(images, training=True)
            mean_loss = loss_of(logits)
            scaled = [optimizers[name].scale_loss(mean_loss / replicas) for name in names]
        applied = tf.constant(True)
        for name, scaled_loss in zip(names, scaled, strict=True):
            gradients = tape.gradient(scaled_loss, groups[name])
            if loss_scaling:  # otherwise nothing skips: a non-finite loss stops the run
                finite = all_finite(gradients)
                if replicas > 1:
                    gradients = agree_on_finite(gradients, finite)
                    finite = all_finite(gradients)
                applied = tf.logical_and(applied, finite)
            optimizers[name].apply(gradients, groups[name])
        for variable, value in zip(guarded, before, strict=True):
            variable.assign(tf.where(applied, variable, value))
        predicted = grading.tf_predicted_grades(grading.probabilities(logits))
        hits = tf.equal(predicted, training_targets(grades, head))
        return mean_loss, tf.reduce_mean(tf.cast(hits, tf.float32)), applied

    return tf.function(step, jit_compile=jit_compile)


def make_train_function(
    state: TrainingState,
    *,
    groups: dict,
    loss: Callable,
    placement: Placement | None = None,
    head: str = "softmax",
    jit_compile: bool = False,
    mixing: Mixing | None = None,
):
    """``run(iterator, count)``: ``count`` steps in one call, batches drawn inside the graph
    (as ``model.fit`` does), the step counter and epoch sums updated there too.

    Args:
        state: the training state (model, optimizers, weight average, counters).
        groups: optimizer name -> the variables it updates.
        loss: ``loss(grades, logits) -> scalar`` (``retina.training.losses.make_loss``).
        placement: the strategy and this worker's place in it (default: no strategy).
        head: ``model.head``, for the accuracy's targets.
        jit_compile: XLA-compile the step.
        mixing: mixup/cutmix of each batch (``Mixing.from_config``; None: off).

    Returns per-step (losses, accuracies, applied) tensors of length ``count``: global-batch
    means, the same on every worker.
    """
    placement = placement or Placement(tf.distribute.get_strategy())
    single_step = make_single_step(state, groups, loss, placement, head, jit_compile, mixing)
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
            if state.ema is not None:
                state.ema.update(state.step)
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

"""What a checkpoint holds: the training *state*, as one ``tf.train.Checkpoint``."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import tensorflow as tf

from retina.config import OperatingPoint, ValidationMetric
from retina.icdr import GRADE_BOUNDARIES
from retina.models.grading import DEFAULT_LINK, ORDINAL_HEADS, Grading

# The validation metrics every checkpoint records. Fixed: a metric added here would be a
# variable older checkpoints lack, and they would no longer restore.
RECORDED_METRICS = (
    ValidationMetric.referable_auc,
    ValidationMetric.sensitivity,
    ValidationMetric.specificity,
    ValidationMetric.quadratic_weighted_kappa,
)
OPERATING_POINTS = tuple(OperatingPoint)


def seed_generator_states(model: keras.Model) -> list[tf.Variable]:
    """The state variables of the model's Keras SeedGenerators (dropout and the like).

    ``tf.train.Checkpoint(model=...)`` does not save them, and without them a resumed run
    draws different dropout masks than an uninterrupted one.
    """
    states = []
    for layer in model._flatten_layers(include_self=False):
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator):
                states.append(value.state)
    return states


def averaged_variables(model: keras.Model) -> list:
    """The model variables that have a weight average (``train.ema_decay``), in a fixed order
    (not trainability's): every floating-point one, BatchNorm statistics included."""
    return [v for v in model.variables if keras.backend.is_float_dtype(v.dtype)]


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 over every model weight (BatchNorm statistics included; the dropout seed
    states, which are not weights, left out): equal on two workers, or after a restore,
    exactly when every weight is bit-identical."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


def _untrainable(value, dtype=tf.float32, name: str | None = None) -> tf.Variable:
    return tf.Variable(value, dtype=dtype, trainable=False, name=name)


class TrainingState:
    """Everything that must survive a restart: step, epoch, model, every optimizer (moments
    and loss scale included), the training-data iterator, the Keras RNG states, the running
    sums of the epoch, the latest validation metrics and operating points, the best-k
    ledger, the learning-rate scale and the weight averages.

    Args:
        model: the model being trained.
        optimizers: ``{"all": opt}`` or ``{"backbone": opt, "head": opt}``, each built.
        iterator: the training stream's iterator (its position is state).
        keep_best: slots of the best-checkpoint ledger.
        lr_scale: the checkpointed multiplier of every learning rate (a rollback halves it).
        ema: the weight average (``retina.training.ema.WeightAverage``), if the run keeps one.
        step: the step counter, when something built before the state (the learning-rate
            schedules) reads it; else a new one.
        head: ``model.head``; an ordinal or regression head's state also holds its grade
            cut-points and regression link, fitted on validation (``retina.models.grading``).
        quality: the quality gate's unfitted state by name (``retina.quality.gate.GateParams``
            as arrays), when the run fits one (``quality.enabled``); refitted after every
            epoch and saved under ``quality/``.
    """

    def __init__(
        self,
        *,
        model: keras.Model,
        optimizers: dict[str, keras.optimizers.Optimizer],
        iterator: tf.data.Iterator | None = None,
        keep_best: int = 3,
        lr_scale: tf.Variable | None = None,
        ema=None,
        step: tf.Variable | None = None,
        head: str = "softmax",
        quality: dict[str, np.ndarray] | None = None,
    ):
        self.model = model
        self.head = head
        self.optimizers = optimizers
        self.iterator = iterator
        self.ema = ema
        self._finite_check = None
        self.step = step if step is not None else _untrainable(0, tf.int64, "step")
        self.epoch = _untrainable(0, tf.int64, "epoch")
        # Steps the loss-scale optimizer skipped (non-finite gradients), over the whole run.
        self.skipped_steps = _untrainable(0, tf.int64, "skipped")
        self.lr_scale = lr_scale if lr_scale is not None else _untrainable(1.0)
        # Sums over the current epoch, so a mid-epoch resume reports the same epoch mean.
        self.epoch_totals = {
            name: _untrainable(0.0, tf.float64, f"epoch_{name}")
            for name in ("loss", "accuracy", "steps")
        }
        self.metrics = {
            str(name): _untrainable(float("nan"), name=f"val_{name}") for name in RECORDED_METRICS
        }
        # Referral thresholds chosen on the validation split at this step; evaluation applies
        # them unchanged, so they are never tuned on the test set.
        self.operating_points = {
            str(name): _untrainable(float("nan"), name=f"threshold_{name}")
            for name in OPERATING_POINTS
        }
        # The best-checkpoint ledger: empty slots hold step -1.
        self.best_values = _untrainable([float("nan")] * keep_best)
        self.best_steps = _untrainable([-1] * keep_best, tf.int64)
        # Only where the head needs them, so the state of a softmax run is as it always was.
        self.grading = (
            {
                "cut_points": _untrainable(list(GRADE_BOUNDARIES), name="cut_points"),
                "link": _untrainable(list(DEFAULT_LINK), name="regression_link"),
            }
            if head in ORDINAL_HEADS
            else None
        )
        # The quality gate's fit (retina.quality); None in runs without it, so their
        # checkpoints keep the objects they always had.
        self.quality = (
            {name: _untrainable(value, name=f"quality_{name}") for name, value in quality.items()}
            if quality is not None
            else None
        )
        self.checkpoint = tf.train.Checkpoint(**self._parts())

    def _parts(self) -> dict:
        parts = dict(
            step=self.step,
            epoch=self.epoch,
            model=self.model,
            optimizers=self.optimizers,
            rng=seed_generator_states(self.model),
            epoch_totals=self.epoch_totals,
            metrics=self.metrics,
            best_values=self.best_values,
            best_steps=self.best_steps,
            skipped_steps=self.skipped_steps,
            lr_scale=self.lr_scale,
            operating_points=self.operating_points,
        )
        if self.iterator is not None:
            parts["iterator"] = self.iterator
        if self.ema is not None:
            parts["ema"] = self.ema.averages
        if self.grading is not None:
            parts["grading"] = self.grading
        if self.quality is not None:
            parts["quality"] = self.quality
        return parts

    @property
    def current_step(self) -> int:
        return int(self.step.numpy())

    def ledger_steps(self) -> list[int]:
        """The steps the best-k ledger holds, best first."""
        return [int(s) for s in self.best_steps.numpy() if s >= 0]

    def record_metrics(self, metrics: dict) -> None:
        for name, variable in self.metrics.items():
            variable.assign(float(metrics[name]))

    def record_operating_points(self, thresholds: dict[str, float]) -> None:
        for name, variable in self.operating_points.items():
            variable.assign(float(thresholds[name]))

    def record_grading(self, grading: Grading) -> None:
        if self.grading is not None:
            self.grading["cut_points"].assign(list(grading.cut_points))
            self.grading["link"].assign(list(grading.link))

    def record_quality(self, values: dict[str, np.ndarray] | None) -> None:
        """The quality gate fitted after the latest validation (``retina.quality.fit``)."""
        if self.quality is not None and values is not None:
            for name, variable in self.quality.items():
                variable.assign(np.asarray(values[name], np.float32))

    def current_grading(self) -> Grading:
        """The head's grading as fitted on the latest validation."""
        if self.grading is None:
            return Grading(self.head)
        values = {name: tuple(v.numpy().tolist()) for name, v in self.grading.items()}
        return Grading(self.head, values["cut_points"], values["link"])

    def metric_values(self) -> dict[str, float]:
        return {name: float(variable.numpy()) for name, variable in self.metrics.items()}

    def epoch_means(self) -> dict[str, float]:
        steps = max(float(self.epoch_totals["steps"].numpy()), 1.0)
        return {k: float(self.epoch_totals[k].numpy()) / steps for k in ("loss", "accuracy")}

    def reset_epoch_totals(self) -> None:
        for variable in self.epoch_totals.values():
            variable.assign(0.0)

    def weights_are_finite(self) -> bool:
        """Model weights and optimizer moments hold no NaN or Inf (one compiled check)."""
        if self._finite_check is None:
            variables = list(self.model.variables)
            for optimizer in self.optimizers.values():
                variables += optimizer.variables
            floats = [v for v in variables if keras.backend.is_float_dtype(v.dtype)]
            self._finite_check = tf.function(
                lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in floats])
            )
        return bool(self._finite_check())

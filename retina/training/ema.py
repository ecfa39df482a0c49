"""Exponential moving average of the model's weights (``train.ema_decay``).

The averages cover every floating-point model variable, BatchNorm statistics included,
in ``model.variables`` order; they are checkpointed under ``ema`` and are the weights that
validation, evaluation and export see.
"""

from __future__ import annotations

from contextlib import contextmanager

import keras
import tensorflow as tf

from retina.checkpoint.state import averaged_variables


class WeightAverage:
    """Shadow copies updated after every applied step."""

    def __init__(self, model: keras.Model, decay: float):
        self.decay = decay
        self.targets = averaged_variables(model)
        self.averages = [
            tf.Variable(v.value, trainable=False, name=f"ema_{i}")
            for i, v in enumerate(self.targets)
        ]

    def update(self, step: tf.Tensor) -> None:
        """Inside the train step. Early on the decay is lower, (1 + step) / (10 + step), so
        the average is not dominated by the random initial weights."""
        step = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + step) / (10.0 + step))
        for average, variable in zip(self.averages, self.targets, strict=True):
            average.assign(decay * average + (1.0 - decay) * tf.cast(variable, average.dtype))

    @contextmanager
    def applied(self):
        """The averaged weights in the model for the duration of the block."""
        live = [tf.identity(v) for v in self.targets]
        for variable, average in zip(self.targets, self.averages, strict=True):
            variable.assign(average)
        try:
            yield
        finally:
            for variable, value in zip(self.targets, live, strict=True):
                variable.assign(value)

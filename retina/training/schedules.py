"""Learning-rate schedules from ``schedule=``: constant, linear warmup + cosine, step decay.

Every optimizer's rate is ``base rate x schedule factor(step) x scale``, where ``scale`` is
one checkpointed variable that a rollback halves; the schedule itself holds no state.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from retina.config import ScheduleConfig, ScheduleName, require_choice
from retina.errors import ConfigError


def check_schedule(cfg: ScheduleConfig) -> None:
    require_choice("schedule.name", cfg.name, ScheduleName)
    if cfg.warmup_epochs < 0 or not 0 <= cfg.min_fraction <= 1 or cfg.factor <= 0:
        raise ConfigError(
            "schedule.warmup_epochs must be >= 0, schedule.min_fraction in [0, 1] and "
            f"schedule.factor > 0; got {cfg.warmup_epochs}, {cfg.min_fraction}, {cfg.factor}."
        )
    if list(cfg.boundaries) != sorted(cfg.boundaries):
        raise ConfigError(f"schedule.boundaries={list(cfg.boundaries)} must be increasing.")


def schedule_factor(cfg: ScheduleConfig, step, steps_per_epoch: int, total_steps: int):
    """The multiplier of the base rate at optimizer step ``step`` (0-based), as a tensor."""
    step = tf.cast(step, tf.float32)
    warmup = cfg.warmup_epochs * steps_per_epoch
    factor = tf.constant(1.0)
    if cfg.name == "warmup_cosine":
        span = max(total_steps - warmup, 1.0)
        progress = tf.clip_by_value((step - warmup) / span, 0.0, 1.0)
        cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
        factor = cfg.min_fraction + (1.0 - cfg.min_fraction) * cosine
    elif cfg.name == "step":
        for boundary in cfg.boundaries:
            factor *= tf.where(step >= boundary * steps_per_epoch, cfg.factor, 1.0)
    if warmup > 0:
        factor *= tf.minimum(1.0, (step + 1.0) / warmup)
    return factor


class ScheduledRate(keras.optimizers.schedules.LearningRateSchedule):
    """``base_rate x schedule_factor(step) x scale`` for one optimizer.

    With ``global_step`` (the training state's step counter) the schedule follows it, not
    the optimizer's own ``iterations``: under mixed_float16 a skipped step does not advance
    ``iterations``, and the schedule would fall behind the run.
    """

    def __init__(
        self,
        base_rate,
        cfg,
        steps_per_epoch,
        total_steps,
        scale: tf.Variable,
        global_step: tf.Variable | None = None,
    ):
        self.base_rate = base_rate
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.scale = scale
        self.global_step = global_step

    def __call__(self, step):
        return self.rate_at(self.global_step if self.global_step is not None else step)

    def rate_at(self, step):
        """The rate of the step with 0-based index ``step``."""
        factor = schedule_factor(self.cfg, step, self.steps_per_epoch, self.total_steps)
        return self.base_rate * factor * self.scale

    def get_config(self):
        return {"base_rate": self.base_rate, "schedule": self.cfg.name}

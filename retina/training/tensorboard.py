"""TensorBoard summaries under ``<run_dir>/tensorboard``: ``tensorboard --logdir runs``.

Everything is written at the global training step, which a resumed run continues.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from retina.checkpoint.state import VALIDATION_METRICS
from retina.run_dir import TENSORBOARD_DIR
from retina.training.cadence import is_due
from retina.training.schedules import ScheduledRate


def learning_rate_at(optimizer, step: int) -> float:
    """The learning rate ``optimizer`` used for (1-based) training step ``step``."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    schedule = inner._learning_rate  # where Keras 3 keeps the schedule object
    if isinstance(schedule, ScheduledRate):
        return float(schedule.rate_at(step - 1))
    return float(optimizer.learning_rate)


def optimizer_scalars(optimizers: dict, step: int) -> dict[str, float]:
    """Learning rate at ``step``, and the current loss scale under mixed_float16, of each
    optimizer."""
    values = {}
    for name, optimizer in optimizers.items():
        values[f"learning_rate/{name}"] = learning_rate_at(optimizer, step)
        if hasattr(optimizer, "dynamic_scale"):
            values[f"loss_scale/{name}"] = float(optimizer.dynamic_scale.numpy())
    return values


class TensorBoardLog:
    """Training scalars every ``train.log_every_steps``, clinical metrics every epoch."""

    def __init__(self, run_dir: Path):
        self.writer = tf.summary.create_file_writer(str(Path(run_dir) / TENSORBOARD_DIR))
        self._pending: list[float] = []

    def _write(self, step: int, values: dict) -> None:
        with self.writer.as_default(step=step):
            for tag, value in values.items():
                if math.isfinite(value):
                    tf.summary.scalar(tag, value)

    def steps(self, step: int, losses: np.ndarray, optimizers: dict, rate, train_cfg) -> None:
        """After a compiled call of ``len(losses)`` steps that ended at ``step``: writes at
        every multiple of ``train.log_every_steps`` among them, at that exact step, the mean
        loss since the previous write."""
        every = max(train_cfg.log_every_steps, 1)
        for current, loss in enumerate(losses.tolist(), start=step - len(losses) + 1):
            self._pending.append(loss)
            if is_due(current, every):
                values = {"train/loss": float(np.nanmean(self._pending))}
                values.update(
                    {"train/images_per_s": rate, **optimizer_scalars(optimizers, current)}
                )
                self._write(current, values)
                self._pending = []

    def epoch_end(self, step: int, summary: dict, metrics: dict) -> None:
        names = (*VALIDATION_METRICS, "accuracy")
        values = {f"val/{name}": float(metrics[name]) for name in names}
        values.update(
            {
                "epoch/loss": summary["loss"],
                "epoch/accuracy": summary["accuracy"],
                "epoch/skipped_steps": float(summary["skipped_steps"]),
            }
        )
        self._write(step, values)
        self.writer.flush()

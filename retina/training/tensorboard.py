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


def optimizer_scalars(optimizers: dict) -> dict[str, float]:
    """Current learning rate, and loss scale under mixed_float16, of each optimizer."""
    values = {}
    for name, optimizer in optimizers.items():
        values[f"learning_rate/{name}"] = float(optimizer.learning_rate)
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
        """After a compiled call that ended at ``step``; writes when a log step was passed."""
        self._pending.extend(losses.tolist())
        if not is_due(step, max(train_cfg.log_every_steps, 1), len(losses)):
            return
        values = {"train/loss": float(np.nanmean(self._pending)), "train/images_per_s": rate}
        values.update(optimizer_scalars(optimizers))
        self._write(step, values)
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

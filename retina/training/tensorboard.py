"""TensorBoard summaries under ``<run_dir>/tensorboard``: ``tensorboard --logdir runs``.

Everything is written at the global training step, which a resumed run continues. Each run
also records its hyperparameters (TensorBoard's HParams plugin), so the jobs of a sweep
line up in the HParams table and parallel-coordinates views beside their ``val/`` metrics.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml
from omegaconf import OmegaConf
from tensorboard.plugins.hparams import api as hparams_api

from retina.config import ValidationMetric
from retina.run_dir import HYDRA_OVERRIDES, TENSORBOARD_DIR
from retina.training.cadence import is_due
from retina.training.schedules import ScheduledRate

# Always in the HParams table; the keys a Hydra job overrides are added to them.
HPARAM_KEYS = (
    "model.name",
    "optimizer.name",
    "optimizer.learning_rate",
    "schedule.name",
    "train.batch_size",
    "train.epochs",
    "preprocess.image_size",
    "seed",
    "data.folds",
    "data.fold",
)


def hyperparameters(cfg, run_dir: Path) -> dict:
    """The values of ``HPARAM_KEYS`` and of the keys in the job's Hydra overrides (a
    ``group=option`` override as its option; paths left out), as HParams types."""
    config = OmegaConf.structured(cfg)
    overrides_file = run_dir / HYDRA_OVERRIDES
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    pairs = (o.lstrip("+~").split("=", 1) for o in overrides or [] if "=" in o)
    chosen = {key: value for key, value in pairs if "/" not in value}
    values = {key: OmegaConf.select(config, key) for key in (*HPARAM_KEYS, *chosen)}
    values |= {key: chosen[key] for key, value in values.items() if OmegaConf.is_config(value)}
    return {key: _hparam(value) for key, value in values.items() if value is not None}


def _hparam(value):
    return value if isinstance(value, bool | int | float) else str(value)


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

    def __init__(self, run_dir: Path, cfg):
        self.writer = tf.summary.create_file_writer(str(Path(run_dir) / TENSORBOARD_DIR))
        self._pending: list[float] = []
        with self.writer.as_default():
            hparams_api.hparams(hyperparameters(cfg, Path(run_dir)), trial_id=Path(run_dir).name)

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
        names = (*ValidationMetric, "accuracy")
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

"""Optimizer registry: ``optimizer.name`` picks one, YAML never names a Python class."""

from __future__ import annotations

import keras

from retina.config import OptimizerConfig
from retina.errors import ConfigError
from retina.training.precision import uses_loss_scaling


def _adam(cfg: OptimizerConfig):
    return keras.optimizers.Adam(cfg.learning_rate)


def _adamw(cfg: OptimizerConfig):
    return keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay)


def _sgd(cfg: OptimizerConfig):
    return keras.optimizers.SGD(cfg.learning_rate, momentum=cfg.momentum)


OPTIMIZERS = {"adam": _adam, "adamw": _adamw, "sgd": _sgd}


def build_optimizer(cfg: OptimizerConfig, policy: str) -> keras.optimizers.Optimizer:
    """The configured optimizer, wrapped in a LossScaleOptimizer under mixed_float16."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name={cfg.name!r}; use one of {sorted(OPTIMIZERS)}.")
    optimizer = OPTIMIZERS[cfg.name](cfg)
    if uses_loss_scaling(policy):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer

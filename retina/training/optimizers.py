"""Optimizer registry and variable groups: ``optimizer.name`` picks a registered optimizer
(YAML never names a Python class); ``optimizer.head`` gives the classifier head its own."""

from __future__ import annotations

import keras

from retina.config import OptimizerConfig, OptimizerSpec
from retina.errors import ConfigError
from retina.training.precision import uses_loss_scaling

# Models name the layers of their classifier head with this prefix (see models/).
HEAD_PREFIX = "head_"


def _adam(spec: OptimizerSpec):
    return keras.optimizers.Adam(spec.learning_rate)


def _adamw(spec: OptimizerSpec):
    return keras.optimizers.AdamW(spec.learning_rate, weight_decay=spec.weight_decay)


def _sgd(spec: OptimizerSpec):
    return keras.optimizers.SGD(spec.learning_rate, momentum=spec.momentum)


OPTIMIZERS = {"adam": _adam, "adamw": _adamw, "sgd": _sgd}


def build_optimizer(spec: OptimizerSpec, policy: str, key: str = "optimizer"):
    """One optimizer, wrapped in a LossScaleOptimizer (its own dynamic scale) under fp16."""
    if spec.name not in OPTIMIZERS:
        raise ConfigError(f"{key}.name={spec.name!r}; use one of {sorted(OPTIMIZERS)}.")
    optimizer = OPTIMIZERS[spec.name](spec)
    if uses_loss_scaling(policy):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_optimizers(cfg: OptimizerConfig, policy: str) -> dict[str, keras.optimizers.Optimizer]:
    """``{"all": opt}``, or ``{"backbone": opt, "head": opt}`` when ``optimizer.head`` is set."""
    if cfg.head is None:
        return {"all": build_optimizer(cfg, policy)}
    return {
        "backbone": build_optimizer(cfg, policy),
        "head": build_optimizer(cfg.head, policy, key="optimizer.head"),
    }


def variable_groups(model: keras.Model, names: list[str]) -> dict[str, list]:
    """The trainable variables each optimizer updates, every variable in exactly one group."""
    if names == ["all"]:
        return {"all": list(model.trainable_variables)}
    head = [
        variable
        for layer in model.layers
        if layer.name.startswith(HEAD_PREFIX)
        for variable in layer.trainable_variables
    ]
    head_ids = {id(v) for v in head}
    backbone = [v for v in model.trainable_variables if id(v) not in head_ids]
    if not head or not backbone:
        raise ConfigError(
            f"optimizer.head needs a model with both head layers (named {HEAD_PREFIX}*) and "
            f"backbone layers; {model.name} has {len(head)} head and {len(backbone)} backbone "
            "variables."
        )
    return {"backbone": backbone, "head": head}


def build_all(optimizers: dict, groups: dict) -> None:
    """Creates every moment variable now, so a restore can be verified (restore step 2)."""
    for name, optimizer in optimizers.items():
        optimizer.build(groups[name])

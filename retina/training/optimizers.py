"""Optimizer registry and variable groups: ``optimizer.name`` picks a registered optimizer
(YAML never names a Python class); ``optimizer.head`` gives the classifier head its own.
Each optimizer's rate follows ``schedule=`` (see ``retina.training.schedules``)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from retina.config import (
    OptimizerConfig,
    OptimizerName,
    OptimizerSpec,
    ScheduleConfig,
    require_choice,
)
from retina.errors import ConfigError
from retina.training.layer_decay import LayerScaled, layer_scaled, layer_scales
from retina.training.schedules import ScheduledRate, check_schedule

# Models name the layers of their classifier head with this prefix (see models/).
HEAD_PREFIX = "head_"


def _adam(spec: OptimizerSpec, rate, clip, scaled: bool):
    return _class(keras.optimizers.Adam, scaled)(rate, global_clipnorm=clip)


def _adamw(spec: OptimizerSpec, rate, clip, scaled: bool):
    if scaled:  # its decoupled decay at each variable's own rate (retina.training.layer_decay)
        optimizer = layer_scaled(keras.optimizers.Adam)(rate, global_clipnorm=clip)
        optimizer.decoupled_decay = spec.weight_decay
        return optimizer
    return keras.optimizers.AdamW(rate, weight_decay=spec.weight_decay, global_clipnorm=clip)


def _sgd(spec: OptimizerSpec, rate, clip, scaled: bool):
    return _class(keras.optimizers.SGD, scaled)(rate, momentum=spec.momentum, global_clipnorm=clip)


def _class(optimizer_class: type, scaled: bool) -> type:
    return layer_scaled(optimizer_class) if scaled else optimizer_class


OPTIMIZERS = {OptimizerName.adam: _adam, OptimizerName.adamw: _adamw, OptimizerName.sgd: _sgd}


@dataclass
class RateSetup:
    """What every optimizer's learning-rate schedule needs to know about the run."""

    schedule: ScheduleConfig
    steps_per_epoch: int
    total_steps: int
    scale: tf.Variable  # checkpointed; a rollback halves it
    global_step: tf.Variable | None = None  # the run's step counter (else each optimizer's own)


def uses_loss_scaling(policy: str) -> bool:
    # bfloat16 has float32's exponent range: its gradients do not underflow.
    return policy == "mixed_float16"


def build_optimizer(spec: OptimizerSpec, policy: str, rates: RateSetup, key: str = "optimizer"):
    """One optimizer, wrapped in a LossScaleOptimizer (its own dynamic scale) under fp16.

    Gradient clipping happens in the inner optimizer, after the loss scale is divided out.
    """
    name = require_choice(f"{key}.name", spec.name, OPTIMIZERS)
    if spec.clip_global_norm < 0:
        raise ConfigError(f"{key}.clip_global_norm={spec.clip_global_norm}; use >= 0 (0: off).")
    rate = ScheduledRate(
        spec.learning_rate,
        rates.schedule,
        rates.steps_per_epoch,
        rates.total_steps,
        rates.scale,
        rates.global_step,
    )
    scaled = spec.layer_decay != 1
    optimizer = OPTIMIZERS[name](spec, rate, spec.clip_global_norm or None, scaled)
    if scaled:
        optimizer.layer_decay = spec.layer_decay
    if uses_loss_scaling(policy):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_optimizers(
    cfg: OptimizerConfig, policy: str, rates: RateSetup
) -> dict[str, keras.optimizers.Optimizer]:
    """``{"all": opt}``, or ``{"backbone": opt, "head": opt}`` when ``optimizer.head`` is set."""
    check_schedule(rates.schedule)
    if cfg.head is None:
        return {"all": build_optimizer(cfg, policy, rates)}
    return {
        "backbone": build_optimizer(cfg, policy, rates),
        "head": build_optimizer(cfg.head, policy, rates, key="optimizer.head"),
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


def build_all(optimizers: dict, groups: dict, model: keras.Model) -> None:
    """Creates every moment variable now, so a restore can be verified (restore step 2);
    a layer-scaled optimizer first learns each variable's rate scale in ``model``
    (``retina.training.layer_decay.layer_scales``)."""
    for name, optimizer in optimizers.items():
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a loss scale
        if isinstance(inner, LayerScaled):
            inner.set_scales(groups[name], layer_scales(model, inner.layer_decay))
        optimizer.build(groups[name])


def set_backbone_trainable(model: keras.Model, trainable: bool, keep: str = HEAD_PREFIX) -> None:
    """Freezes or unfreezes every layer whose name does not start with ``keep`` (the head's
    layers; ``head_logits`` alone for a linear probe). A frozen BatchNormalization layer
    also runs in inference mode (Keras 3), keeping pretrained statistics intact."""
    for layer in model.layers:
        if layer.weights and not layer.name.startswith(keep):
            layer.trainable = trainable

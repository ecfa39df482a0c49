"""Chooses and applies the Keras dtype policy from ``train.precision``."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from retina.config import Precision, require_choice

log = logging.getLogger(__name__)


def resolve_precision(requested: str) -> str:
    """``auto`` is mixed_float16 on a GPU of compute capability >= 7.0 (tensor cores),
    float32 anywhere else."""
    requested = require_choice("train.precision", requested, Precision)
    if requested != Precision.auto:
        return requested
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and tuple(capability) >= (7, 0):
            return "mixed_float16"
    return "float32"


def apply_precision(requested: str) -> str:
    """Sets the global policy before any model is built; returns the policy name used."""
    policy = resolve_precision(requested)
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def uses_loss_scaling(policy: str) -> bool:
    # bfloat16 has float32's exponent range: its gradients do not underflow.
    return policy == "mixed_float16"

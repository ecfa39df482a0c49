"""Chooses and applies the Keras dtype policy from ``train.precision``.

``auto`` is decided from the hardware and the model, and the decision is recorded in the
run's ``config.yaml`` as ``train.resolved_precision``, so a resumed run keeps the policy it
started with (its checkpoint holds that policy's variables) wherever it resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from retina.config import Precision, require_choice
from retina.models import bfloat16_faster_on_cpu

log = logging.getLogger(__name__)
CPU_INFO = Path("/proc/cpuinfo")
# Feature flags of CPUs with bfloat16 matrix instructions (x86 Linux names; "bf16" is the
# AArch64 one), which oneDNN uses for bfloat16 convolutions and matrix products.
BFLOAT16_MATRIX_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
# From scripts/benchmark.py precision (README, Benchmarks): float16 without float16 kernels.
FLOAT16_ON_CPU_SLOWDOWN = (
    "small_cnn at 128 px trained at 0.45x float32's speed on an AVX2 CPU and about 0.01x "
    "on an AMX-BF16 one"
)


@dataclass(frozen=True)
class PrecisionChoice:
    policy: str
    reason: str


def cpu_feature_flags(cpu_info: Path = CPU_INFO) -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them; empty where it reports none."""
    try:
        lines = cpu_info.read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        found.append(tuple(capability) if capability else (0, 0))
    return found


def choose_auto(
    model_name: str, gpus: list[tuple[int, int]], cpu_flags: frozenset[str]
) -> PrecisionChoice:
    """What ``auto`` means on this hardware for this model; the same inputs, the same answer."""
    if gpus:
        capability = min(gpus)
        shown = ".".join(map(str, capability))
        if capability >= (7, 0):
            also = "; mixed_bfloat16 is an option from 8.0" if capability >= (8, 0) else ""
            return PrecisionChoice(
                "mixed_float16", f"GPU compute capability {shown} has float16 tensor cores{also}"
            )
        return PrecisionChoice("float32", f"GPU compute capability {shown} is below 7.0")
    matrix_flags = sorted(set(BFLOAT16_MATRIX_FLAGS) & cpu_flags)
    if not matrix_flags:
        return PrecisionChoice(
            "float32", "the CPU reports no bfloat16 matrix instructions (amx_bf16, avx512_bf16)"
        )
    if not bfloat16_faster_on_cpu(model_name):
        return PrecisionChoice(
            "float32",
            f"the CPU reports {', '.join(matrix_flags)}, but mixed_bfloat16 was not measured "
            f"faster than float32 for {model_name} on such CPUs",
        )
    return PrecisionChoice(
        "mixed_bfloat16",
        f"the CPU reports {', '.join(matrix_flags)} and mixed_bfloat16 was measured faster "
        f"than float32 for {model_name} on such CPUs",
    )


def choose_precision(requested: str, model_name: str, resumed_policy: str = "") -> PrecisionChoice:
    """The policy for a run: as requested, or for ``auto`` the resumed run's own policy or
    the hardware's choice."""
    requested = require_choice("train.precision", requested, Precision)
    if requested != Precision.auto:
        return PrecisionChoice(requested, "as requested")
    if resumed_policy:
        return PrecisionChoice(resumed_policy, "kept from the run's config.yaml (resumed run)")
    return choose_auto(model_name, gpu_compute_capabilities(), cpu_feature_flags())


def apply_precision(requested: str, model_name: str, resumed_policy: str = "") -> str:
    """Sets the global policy before any model is built, says why, and warns when float16
    is asked for without a GPU; returns the policy name used."""
    choice = choose_precision(requested, model_name, resumed_policy)
    log.info("Precision: %s (train.precision=%s: %s).", choice.policy, requested, choice.reason)
    if choice.policy == Precision.mixed_float16 and not tf.config.list_physical_devices("GPU"):
        log.warning(float16_on_cpu_warning(cpu_feature_flags()))
    keras.mixed_precision.set_dtype_policy(choice.policy)
    return choice.policy


def float16_on_cpu_warning(cpu_flags: frozenset[str]) -> str:
    """Why mixed_float16 is slow on this CPU, and what to ask for instead."""
    if set(BFLOAT16_MATRIX_FLAGS) & cpu_flags:
        instead = "train.precision=mixed_bfloat16 (this CPU has bfloat16 matrix instructions)"
    else:
        instead = (
            "train.precision=float32 (this CPU has no bfloat16 matrix instructions either, so "
            "mixed_bfloat16 is emulated too)"
        )
    return (
        "train.precision=mixed_float16 on a CPU: CPUs have no float16 kernels, so it is "
        f"emulated ({FLOAT16_ON_CPU_SLOWDOWN}). Use {instead}, or auto. Running as asked."
    )


def uses_loss_scaling(policy: str) -> bool:
    # bfloat16 has float32's exponent range: its gradients do not underflow.
    return policy == "mixed_float16"

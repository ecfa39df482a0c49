"""Chooses and applies the Keras dtype policy from ``train.precision``.

``auto`` is decided from the hardware: on a GPU by its compute capability; on a CPU without
bfloat16 matrix instructions float32; on a CPU with them by measurement, the faster of
float32 and mixed_bfloat16 for this run's model, image size and batch size, measured once
per machine and kept in a per-user cache (``retina.training.precision_probe``). The
decision is recorded in the run's ``config.yaml`` as ``train.resolved_precision``, so a
resumed run keeps the policy it started with (its checkpoint holds that policy's
variables) wherever it resumes.

The CPU is read from ``/proc/cpuinfo`` through one seam, ``read_cpu``; the environment
variable ``RETINA_CPUINFO`` names another file in its place, to see (or test) what ``auto``
does on another CPU.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import tensorflow as tf

from retina.config import Precision, RunConfig, require_choice
from retina.models import without_pretrained
from retina.training.distribute import Placement, same_on_every_worker
from retina.training.precision_cache import cache_folder, cached_measurement
from retina.training.precision_probe import PROBE_POLICIES, ProbeResult, measure_policies

log = logging.getLogger(__name__)
CPU_INFO = Path("/proc/cpuinfo")
CPU_INFO_VARIABLE = "RETINA_CPUINFO"
# Feature flags of CPUs with bfloat16 matrix instructions (x86 Linux names; "bf16" is the
# AArch64 one), which oneDNN uses for bfloat16 convolutions and matrix products.
BFLOAT16_MATRIX_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
# The flags that decide what float32, bfloat16 and float16 cost: part of what identifies
# a CPU in the measurement cache.
PRECISION_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
    "bf16",
)
# From scripts/benchmark.py precision (docs/benchmarks.md): float16 without float16 kernels.
FLOAT16_ON_CPU_SLOWDOWN = (
    "small_cnn at 128 px trained at 0.45x float32's speed on an AVX2 CPU, 0.21x on an "
    "AVX512-BF16 one and about 0.01x on an AMX-BF16 one"
)


@dataclass(frozen=True)
class Cpu:
    model: str
    flags: frozenset[str]

    @property
    def bfloat16_matrix_flags(self) -> list[str]:
        return sorted(set(BFLOAT16_MATRIX_FLAGS) & self.flags)

    @property
    def precision_flags(self) -> list[str]:
        return sorted(set(PRECISION_FLAGS) & self.flags)


@dataclass(frozen=True)
class PrecisionChoice:
    policy: str
    reason: str


def cpu_info_path() -> Path:
    return Path(os.environ.get(CPU_INFO_VARIABLE) or CPU_INFO)


def read_cpu(cpu_info: Path | None = None) -> Cpu:
    """The CPU's model name and feature flags as the kernel reports them (of its first
    processor); empty where it reports none."""
    try:
        lines = (cpu_info or cpu_info_path()).read_text().splitlines()
    except OSError:
        lines = []
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags") or fields.get("Features") or ""
    return Cpu(fields.get("model name", "unknown CPU"), frozenset(flags.split()))


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        found.append(tuple(capability) if capability else (0, 0))
    return found


def choose_by_rule(gpus: list[tuple[int, int]], cpu: Cpu) -> PrecisionChoice | None:
    """What ``auto`` means where a rule decides (a GPU, or a CPU without bfloat16 matrix
    instructions); None where only a measurement can (a CPU with them)."""
    if gpus:
        capability = min(gpus)
        shown = ".".join(map(str, capability))
        if capability >= (7, 0):
            also = "; mixed_bfloat16 is an option from 8.0" if capability >= (8, 0) else ""
            return PrecisionChoice(
                "mixed_float16", f"GPU compute capability {shown} has float16 tensor cores{also}"
            )
        return PrecisionChoice("float32", f"GPU compute capability {shown} is below 7.0")
    if not cpu.bfloat16_matrix_flags:
        return PrecisionChoice(
            "float32", "the CPU reports no bfloat16 matrix instructions (amx_bf16, avx512_bf16)"
        )
    return None


def probe_key(cfg: RunConfig, cpu: Cpu) -> dict:
    """What a training-speed measurement depends on, as it reads back from JSON."""
    key = {
        "cpu": cpu.model,
        "cpu_flags": cpu.precision_flags,
        "tensorflow": tf.__version__,
        "model": asdict(without_pretrained(cfg.model)),
        "image_size": cfg.preprocess.image_size,
        "batch_size": cfg.train.batch_size,
        "jit_compile": cfg.train.jit_compile,
    }
    return json.loads(json.dumps(key))


def probe_figures(result: ProbeResult) -> dict:
    """What the cache keeps of a measurement."""
    return {
        "images_per_s": result.images_per_s,
        "images_per_s_samples": result.samples,
        "first_step_seconds": result.first_step_seconds,
        "probe_seconds": result.seconds,
    }


def measured_choice(cfg: RunConfig, cpu: Cpu) -> PrecisionChoice:
    """The faster of float32 and mixed_bfloat16 for this run's model, image size and batch
    size on this CPU: read from the cache, or measured now and stored there."""
    model, size, batch = cfg.model.name, cfg.preprocess.image_size, cfg.train.batch_size

    def measure() -> dict:
        log.info(
            "Precision: measuring float32 against mixed_bfloat16 for %s at %d px, batch %d, "
            "on this CPU (once per machine and setting)...",
            model,
            size,
            batch,
        )
        return probe_figures(measure_policies(cfg))

    folder = cache_folder(cfg.train.precision_cache)
    record, path, fresh = cached_measurement(folder, probe_key(cfg, cpu), PROBE_POLICIES, measure)
    rates = record["images_per_s"]
    policy = max(PROBE_POLICIES, key=rates.get)  # float32 on a tie
    when = f"measured now in {record['probe_seconds']:.0f} s" if fresh else "measured before"
    return PrecisionChoice(
        policy,
        f"the CPU reports {', '.join(cpu.bfloat16_matrix_flags)}; {model} at {size} px, batch "
        f"{batch} trained at {rates['mixed_bfloat16']:.1f} images/s in mixed_bfloat16 and "
        f"{rates['float32']:.1f} in float32 ({when}, kept in {path})",
    )


def choose_precision(cfg: RunConfig, resumed_policy: str = "") -> PrecisionChoice:
    """The policy for a run: as requested, or for ``auto`` the resumed run's own policy, the
    hardware's rule, or the faster policy measured on this machine."""
    requested = require_choice("train.precision", cfg.train.precision, Precision)
    if requested != Precision.auto:
        return PrecisionChoice(requested, "as requested")
    if resumed_policy:
        return PrecisionChoice(resumed_policy, "kept from the run's config.yaml (resumed run)")
    cpu = read_cpu()
    return choose_by_rule(gpu_compute_capabilities(), cpu) or measured_choice(cfg, cpu)


def apply_precision(
    cfg: RunConfig, resumed_policy: str = "", placement: Placement | None = None
) -> str:
    """Sets the global policy before any model is built, says why, and warns when float16
    is asked for without a GPU; returns the policy name used. Workers whose ``auto``
    choices differ (different CPUs) all train in float32."""
    choice = choose_precision(cfg, resumed_policy)
    policies = tuple(Precision)
    vote = policies.index(choice.policy)
    if placement and not same_on_every_worker(placement, vote, len(policies)):
        choice = PrecisionChoice(
            "float32",
            f"this worker chose {choice.policy}, another worker something else "
            "(different hardware); set train.precision to choose one for all",
        )
    log.info(
        "Precision: %s (train.precision=%s: %s).", choice.policy, cfg.train.precision, choice.reason
    )
    if choice.policy == Precision.mixed_float16 and not tf.config.list_physical_devices("GPU"):
        log.warning(float16_on_cpu_warning(read_cpu()))
    keras.mixed_precision.set_dtype_policy(choice.policy)
    return choice.policy


def float16_on_cpu_warning(cpu: Cpu) -> str:
    """Why mixed_float16 is slow on this CPU, and what to ask for instead."""
    if cpu.bfloat16_matrix_flags:
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

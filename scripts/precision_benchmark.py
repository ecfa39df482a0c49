"""``python scripts/benchmark.py precision``: training images/s under float32,
mixed_bfloat16 and mixed_float16 on this machine, per model, interleaved.

Each policy gets its own session (model, optimizer, compiled step) over the same synthetic
scans at ``--image-size`` px, batch 32. After one traced warm-up step each, ``--repeats``
rounds time ``--precision-steps`` steps of every policy in turn; a policy that has spent
``--precision-budget`` seconds in a round stops early that round (float16 on a CPU can take
minutes a step), so every figure is steps x batch / seconds of whole steps. On a GPU the same
table is added for EfficientNet-B0 at 224 px, batch 64.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from pathlib import Path

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# CPU flags that decide what bfloat16 and float16 cost (x86 names).
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def machine_facts() -> dict:
    import tensorflow as tf

    from retina.training.precision import cpu_feature_flags, gpu_compute_capabilities

    flags = cpu_feature_flags()
    cpu_model = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TensorFlow's default: on for x86)")
    return {
        "cpu": cpu_model,
        "cpu_flags": {flag: flag in flags for flag in RELEVANT_FLAGS},
        "TF_ENABLE_ONEDNN_OPTS": onednn,
        "tensorflow": tf.__version__,
        "gpus": [".".join(map(str, c)) for c in gpu_compute_capabilities()],
    }


class _Stepper:
    """Runs the next ``count`` steps of a session, however many have run before."""

    def __init__(self, session, steps_log):
        self.session, self.steps_log, self.done = session, steps_log, 0

    def step(self) -> float:
        from retina.training.loop import run_steps
        from retina.training.preemption import StopSignal

        first = self.done + 1
        self.done += 1
        started = time.perf_counter()
        with StopSignal() as stop:
            run_steps(self.session, first, first, self.steps_log, stop)
        return time.perf_counter() - started


def _time_round(stepper: _Stepper, steps: int, budget: float) -> tuple[int, float]:
    """(steps run, seconds): at most ``steps``, stopping once ``budget`` seconds are spent."""
    done, seconds = 0, 0.0
    while done < steps and (done == 0 or seconds < budget):
        seconds += stepper.step()
        done += 1
    return done, seconds


def compare_policies(cfg, work: Path, args) -> dict:
    """images/s of each policy for ``cfg``'s model, interleaved over ``args.repeats`` rounds."""
    import keras

    from retina.run_dir import StepLog
    from retina.training.session import open_session

    steppers = {}
    for policy in POLICIES:
        run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=policy))
        run_dir = work / f"{cfg.model.name}-{cfg.preprocess.image_size}-{policy}"
        steppers[policy] = _Stepper(open_session(run_cfg, run_dir), StepLog(None, 0))
    keras.mixed_precision.set_dtype_policy("float32")
    warm_up = {policy: stepper.step() for policy, stepper in steppers.items()}
    rates = {policy: [] for policy in POLICIES}
    for _ in range(args.repeats):
        for policy, stepper in steppers.items():
            steps, seconds = _time_round(stepper, args.precision_steps, args.precision_budget)
            rates[policy].append(steps * cfg.train.batch_size / seconds)
    per_second = {policy: statistics.median(values) for policy, values in rates.items()}
    return {
        "images_per_s": per_second,
        "vs_float32": {p: per_second[p] / per_second["float32"] for p in POLICIES},
        "first_step_seconds_samples": warm_up,
        "images_per_s_samples": rates,
    }


def bench_precision(args, base_cfg, work: Path) -> dict:
    import tensorflow as tf

    result = {"machine_precision": machine_facts()}
    for name in args.precision_models:
        cfg = dataclasses.replace(base_cfg, model=_model_preset(name))
        result[f"{name} {cfg.preprocess.image_size}px"] = compare_policies(cfg, work, args)
    if tf.config.list_physical_devices("GPU"):
        gpu_cfg = dataclasses.replace(
            base_cfg,
            model=_model_preset("efficientnet_b0"),
            preprocess=dataclasses.replace(base_cfg.preprocess, image_size=224),
            train=dataclasses.replace(base_cfg.train, batch_size=64),
        )
        result["GPU efficientnet_b0 224px"] = compare_policies(gpu_cfg, work, args)
    return result


def _model_preset(name: str):
    """``model=<name>`` as Hydra composes it, without weights to download."""
    from benchmark import conf_preset

    from retina.config import ModelConfig
    from retina.models import WEIGHTS_NONE

    return dataclasses.replace(conf_preset("model", name, ModelConfig), weights=WEIGHTS_NONE)

"""``python scripts/benchmark.py precision [--precision-models small_cnn efficientnet_b0]``:
training images/s under float32, mixed_bfloat16 and mixed_float16 on this machine, per
model, interleaved.

The same measurement ``train.precision=auto`` makes on a CPU with bfloat16 matrix
instructions (``retina.training.precision_probe``), longer: each of ``--precision-policies``
gets the model, optimizer and compiled step at ``--image-size`` px, batch
``--precision-batch``; after one traced step each, ``--repeats`` rounds time up to
``--precision-steps`` steps of every policy in turn; a policy that has spent
``--precision-budget`` seconds in a round stops early that round (float16 on a CPU can take
minutes a step). With float32 and mixed_bfloat16 among them, the figures are written to
the cache ``auto`` reads, so a training run with the same model, image size and batch size
on this machine does not measure again. The ViT table in docs/benchmarks.md leaves float16
out: ViT-L's three policies do not fit in 24 GiB at once. On a GPU the same table is added
for EfficientNet-B0 at 224 px, batch 64.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from bench.common import model_preset, train_config

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def add_arguments(parser) -> None:
    parser.add_argument("--precision-models", nargs="+", default=["small_cnn", "efficientnet_b0"])
    parser.add_argument("--precision-steps", type=int, default=5, help="precision: per round")
    parser.add_argument(
        "--precision-budget", type=float, default=30.0, help="precision: seconds per round"
    )
    parser.add_argument("--precision-policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--precision-batch", type=int, default=32, help="precision: batch size")


def machine_facts() -> dict:
    import tensorflow as tf

    from retina.training.precision import PRECISION_FLAGS, gpu_compute_capabilities, read_cpu

    cpu = read_cpu()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TensorFlow's default: on for x86)")
    return {
        "cpu": cpu.model,
        "cpu_flags": {flag: flag in cpu.flags for flag in PRECISION_FLAGS},
        "TF_ENABLE_ONEDNN_OPTS": onednn,
        "tensorflow": tf.__version__,
        "gpus": [".".join(map(str, c)) for c in gpu_compute_capabilities()],
    }


def compare_policies(cfg, args) -> dict:
    """images/s of each policy for ``cfg``'s model, interleaved over ``args.repeats``
    rounds; on a CPU also stored where ``train.precision=auto`` looks."""
    from retina.training import precision
    from retina.training.precision_cache import cache_file, cache_folder, locked, write_measurement
    from retina.training.precision_probe import PROBE_POLICIES, ProbeSettings, measure_policies

    settings = ProbeSettings(
        rounds=args.repeats,
        round_seconds=float("inf"),  # always --precision-steps steps, unless over budget
        max_steps=args.precision_steps,
        budget_seconds=args.precision_budget,
    )
    policies = tuple(args.precision_policies)
    result = measure_policies(cfg, policies, settings)
    figures = precision.probe_figures(result)
    if not precision.gpu_compute_capabilities() and set(PROBE_POLICIES) <= set(policies):
        key = precision.probe_key(cfg, precision.read_cpu())
        path = cache_file(cache_folder(cfg.train.precision_cache), key)
        with locked(path):
            write_measurement(path, key, figures)
        figures["stored_in"] = str(path)
    rates = result.images_per_s
    base = rates.get("float32")
    return {**figures, "vs_float32": {p: rates[p] / base for p in policies} if base else {}}


def run(args) -> dict:
    """Training images/s under float32, mixed_bfloat16 and mixed_float16, per model."""
    import tensorflow as tf

    work = Path(tempfile.mkdtemp(prefix="retina-bench-precision-"))
    base_cfg = train_config(args, work, batch_size=args.precision_batch)
    result = {"machine_precision": machine_facts()}
    for name in args.precision_models:
        cfg = dataclasses.replace(base_cfg, model=model_preset(name))
        result[f"{name} {cfg.preprocess.image_size}px"] = compare_policies(cfg, args)
    if tf.config.list_physical_devices("GPU"):
        gpu_cfg = dataclasses.replace(
            base_cfg,
            model=model_preset("efficientnet_b0"),
            preprocess=dataclasses.replace(base_cfg.preprocess, image_size=224),
            train=dataclasses.replace(base_cfg.train, batch_size=64),
        )
        result["GPU efficientnet_b0 224px"] = compare_policies(gpu_cfg, args)
    return result

"""What several benchmarks share: timing, interleaved rounds, the run configuration they
train with, Hydra's presets and the machine's facts. It measures nothing itself; the
benchmarks that use it run as ``python scripts/benchmark.py <name>``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def seconds(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def interleaved(operations: dict[str, Callable[[], float]], repeats: int) -> dict:
    """Each operation's figure per round, ``repeats`` rounds of every operation in turn:
    drift on a shared machine hits all alike."""
    samples = {name: [] for name in operations}
    for _ in range(repeats):
        for name, operation in operations.items():
            samples[name].append(operation())
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def machine() -> dict:
    """What every result records of the machine it ran on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version()}


def train_config(args, work: Path, **train):
    """The default run configuration on ``--train-patients`` synthetic patients (192 px
    scans) under ``work``, at ``--image-size`` px, float32, no TensorBoard or test set."""
    from retina.config import RunConfig

    cfg = RunConfig()
    data = dataclasses.replace(cfg.data, root=str(work / "scans"), cache_dir=str(work / "cache"))
    data.synthetic.n_patients = args.train_patients
    data.synthetic.image_height = 192
    loop = dataclasses.replace(
        cfg.train, tensorboard=False, evaluate_test=False, precision="float32"
    )
    return dataclasses.replace(
        cfg,
        data=data,
        preprocess=dataclasses.replace(cfg.preprocess, image_size=args.image_size),
        train=dataclasses.replace(loop, **train),
    )


def conf_preset(group: str, name: str, schema):
    """``<group>=<name>`` as Hydra composes it: the option's YAML over the schema."""
    from omegaconf import OmegaConf

    preset = OmegaConf.load(ROOT / "retina" / "conf" / group / f"{name}.yaml")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), preset))


def model_preset(name: str):
    """``model=<name>`` as Hydra composes it, without weights to download."""
    from retina.config import ModelConfig
    from retina.models import WEIGHTS_NONE

    return dataclasses.replace(conf_preset("model", name, ModelConfig), weights=WEIGHTS_NONE)

"""``python scripts/benchmark.py distributed [--train-patients 300] [--repeats 3]``: what a
second worker adds to training throughput.

``python -m retina.train`` as 2 workers (MultiWorkerMirroredStrategy over 127.0.0.1,
BatchNorm synchronized) against 1 process: same data (``--train-patients`` synthetic
patients), model and global batch, at ``--image-size`` px, 4 epochs each; images/s of the
epochs after the first (tracing) only, the two interleaved ``--repeats`` times, medians.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT


def add_arguments(parser) -> None:
    """None of its own: ``--train-patients``, ``--image-size`` and ``--repeats`` are shared."""


def _overrides(args, work: Path) -> list[str]:
    return [
        f"data.root={work / 'scans'}",
        f"data.cache_dir={work / 'cache'}",
        f"data.synthetic.n_patients={args.train_patients}",
        "data.synthetic.image_height=192",
        f"preprocess.image_size={args.image_size}",
        "train.epochs=4",
        "train.precision=float32",
        "train.evaluate_test=false",
        "train.tensorboard=false",
    ]


def _start(overrides: list[str], run_dir: Path, workers: int) -> list[subprocess.Popen]:
    """``workers`` training processes (multi-worker over 127.0.0.1 when more than one)."""
    from retina.training.distribute import loopback_tf_configs

    configs = loopback_tf_configs(workers) if workers > 1 else [None]
    strategy = "multi_worker" if workers > 1 else "default"
    processes = []
    for tf_config in configs:
        env = {**os.environ, **({"TF_CONFIG": tf_config} if tf_config else {})}
        command = [sys.executable, "-m", "retina.train", *overrides]
        command += [f"hydra.run.dir={run_dir}", f"trainer.strategy={strategy}"]
        processes.append(
            subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    return processes


def _train_processes(work: Path, tag: str, overrides: list[str], workers: int) -> dict:
    """``python -m retina.train`` as ``workers`` processes; returns the chief's per-epoch
    img/s and the wall time of the slowest."""
    import pandas as pd

    run_dir = work / tag
    started = time.perf_counter()
    for process in _start(overrides, run_dir, workers):
        _, errors = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{tag}: exit {process.returncode}: {errors.decode()[-2000:]}")
    history = pd.read_csv(run_dir / "history.csv")
    return {
        "images_per_s": history["images_per_s"].tolist(),
        "wall_s": time.perf_counter() - started,
    }


def run(args) -> dict:
    """Training throughput of 2 workers (MultiWorkerMirroredStrategy over loopback, BatchNorm
    synchronized) against 1 process: same data, model and global batch, epochs after the
    first (tracing) only, the two interleaved ``--repeats`` times."""
    work = Path(tempfile.mkdtemp(prefix="retina-bench-distributed-"))
    overrides = _overrides(args, work)
    runs = {1: [], 2: []}
    for repeat in range(args.repeats):
        for workers in (1, 2):
            runs[workers].append(_train_processes(work, f"w{workers}-{repeat}", overrides, workers))
    rate = {n: statistics.median(x for r in runs[n] for x in r["images_per_s"][1:]) for n in runs}
    wall = {n: statistics.median(r["wall_s"] for r in runs[n]) for n in runs}
    return {
        "img_s": {"1 process": rate[1], "2 workers": rate[2]},
        "wall_s": {"1 process (start-up included)": wall[1], "2 workers": wall[2]},
        "ratio": {"2 workers / 1 process, img/s": rate[2] / rate[1]},
        "runs_samples": runs,
    }

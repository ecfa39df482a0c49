"""``python scripts/benchmark.py uncertainty``: what predictive uncertainty costs at
evaluation time, as ratios to one plain pass over the same scans in one run.

The default model (small_cnn, 128 px; untrained weights score as fast as trained ones)
scores ``--uncertainty-scans`` cached PNG scans with ``uncertainty.method=none``, with
``mc_dropout`` at ``--mc-samples`` samples (the backbone runs once, the head per sample),
with ``tta`` (four flips: four full passes) and as a 5-member ensemble (five models, five
passes); the methods are interleaved, ``--repeats`` rounds, medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

MEMBERS = 5


def _cached_scans(folder: Path, count: int, size: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def bench_uncertainty(args) -> dict:
    import keras

    from retina.config import ModelConfig
    from retina.models import build_model
    from retina.sampling import sample_scans

    size, samples = args.image_size, args.mc_samples
    paths = _cached_scans(
        Path(tempfile.mkdtemp(prefix="retina-bench-uncertainty-")), args.uncertainty_scans, size
    )
    models = []
    for seed in range(MEMBERS):
        keras.utils.set_random_seed(seed)
        models.append(build_model(ModelConfig(), size))
    methods = {
        "none": lambda: sample_scans(models[:1], paths, "none", 1, 64, False),
        f"mc_dropout ({samples} samples)": lambda: sample_scans(
            models[:1], paths, "mc_dropout", samples, 64, False
        ),
        "tta (4 flips)": lambda: sample_scans(models[:1], paths, "tta", 1, 64, False),
        f"ensemble ({MEMBERS} members)": lambda: sample_scans(
            models, paths, "ensemble", 1, 64, False
        ),
    }
    for run in methods.values():  # traces every function once
        run()
    seconds = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, run in methods.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "seconds_per_1k_scans": {n: 1000 * s / len(paths) for n, s in median.items()},
        "ratio_to_none": {n: s / median["none"] for n, s in median.items() if n != "none"},
        "scans": len(paths),
        "seconds_samples": seconds,
    }

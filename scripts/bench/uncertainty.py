"""``python scripts/benchmark.py uncertainty [--mc-samples 20] [--uncertainty-scans 512]``:
what predictive uncertainty costs at evaluation time, as ratios to one plain pass over the
same scans in one run.

The default model (small_cnn, 128 px; untrained weights score as fast as trained ones)
scores ``--uncertainty-scans`` cached PNG scans with ``uncertainty.method=none``, with
``mc_dropout`` at ``--mc-samples`` samples (the backbone runs once, the head per sample),
with ``tta`` (four flips: four full passes) and as a 5-member ensemble (five models, five
passes); the methods are interleaved, ``--repeats`` rounds, medians.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

from bench.common import interleaved, medians, seconds

MEMBERS = 5


def add_arguments(parser) -> None:
    parser.add_argument("--mc-samples", type=int, default=20, help="uncertainty: MC samples")
    parser.add_argument("--uncertainty-scans", type=int, default=512, help="uncertainty: scans")


def _cached_scans(folder: Path, count: int, size: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _methods(paths: list[str], samples: int, size: int) -> dict:
    """Scoring ``paths`` with each method: the default model, or ``MEMBERS`` of them."""
    import keras

    from retina.config import ModelConfig
    from retina.models import build_model
    from retina.uncertainty.sampling import sample_scans

    models = []
    for seed in range(MEMBERS):
        keras.utils.set_random_seed(seed)
        models.append(build_model(ModelConfig(), size))
    return {
        "none": lambda: sample_scans(models[:1], paths, "none", 1, 64, False),
        f"mc_dropout ({samples} samples)": lambda: sample_scans(
            models[:1], paths, "mc_dropout", samples, 64, False
        ),
        "tta (4 flips)": lambda: sample_scans(models[:1], paths, "tta", 1, 64, False),
        f"ensemble ({MEMBERS} members)": lambda: sample_scans(
            models, paths, "ensemble", 1, 64, False
        ),
    }


def run(args) -> dict:
    """Evaluation time with mc_dropout, tta and a 5-member ensemble over time with none."""
    size = args.image_size
    paths = _cached_scans(
        Path(tempfile.mkdtemp(prefix="retina-bench-uncertainty-")), args.uncertainty_scans, size
    )
    methods = _methods(paths, args.mc_samples, size)
    for method in methods.values():  # traces every function once
        method()
    timed = {name: functools.partial(seconds, method) for name, method in methods.items()}
    samples = interleaved(timed, args.repeats)
    median = medians(samples)
    return {
        "seconds_per_1k_scans": {n: 1000 * s / len(paths) for n, s in median.items()},
        "ratio_to_none": {n: s / median["none"] for n, s in median.items() if n != "none"},
        "scans": len(paths),
        "seconds_samples": samples,
    }

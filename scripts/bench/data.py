"""``python scripts/benchmark.py data [--patients 40] [--source-height 768]``: how fast the
data pipeline moves scans, as ratios measured in one run.

On ``--patients`` synthetic patients of ``--source-height`` px scans: the cache build
(decode, preprocess to ``--image-size`` px, write) against decoding only, over the same
files with the same worker processes; the training stream's second epoch against its
first (files from the cache).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import seconds

BATCH = 32


def add_arguments(parser) -> None:
    parser.add_argument("--patients", type=int, default=40, help="data: synthetic patients")
    parser.add_argument("--source-height", type=int, default=768, help="data: scan height")


def _decode_only(path) -> tuple:
    from retina.data.images import read_image_rgb

    return read_image_rgb(
        path, "benchmark"
    ).shape  # the array stays in the worker, as the cache's does


def _synthetic_scans(args, work: Path) -> tuple:
    """The synthetic set's manifest and the paths of its scans."""
    from retina.config import DataConfig, SyntheticConfig
    from retina.data.sources import build_manifest
    from retina.data.synthetic import ensure_synthetic_dataset

    spec = SyntheticConfig(n_patients=args.patients, image_height=args.source_height, seed=1)
    ensure_synthetic_dataset(work / "scans", spec)
    manifest, _ = build_manifest(DataConfig(root=str(work / "scans")))
    return manifest, [work / "scans" / p for p in manifest["path"]]


def _epoch_seconds(paths: list[str], grades: list[int]) -> tuple[float, float, int]:
    """Seconds of the training stream's first and second epoch, and its steps per epoch."""
    from retina.data.pipeline import make_train_dataset

    steps = len(paths) // BATCH
    iterator = iter(make_train_dataset(paths, grades, BATCH, seed=0))

    def epoch():
        for _ in range(steps):
            next(iterator)

    first, second = seconds(epoch), seconds(epoch)
    return first, second, steps


def run(args) -> dict:
    """Cache build vs decode only, over the same files with the same worker processes;
    the training stream's second epoch vs its first (files from the cache)."""
    from retina.config import PreprocessConfig
    from retina.data.cache import build_cache
    from retina.data.parallel import run_parallel

    work = Path(tempfile.mkdtemp(prefix="retina-bench-data-"))
    manifest, sources = _synthetic_scans(args, work)
    decode_s = seconds(lambda: run_parallel(_decode_only, sources, 0, "decode only"))
    cfg = PreprocessConfig(image_size=args.image_size)
    cache_s = seconds(lambda: build_cache(manifest, work / "scans", cfg, work / "cache"))
    paths = build_cache(manifest, work / "scans", cfg, work / "cache")[0]["cache_path"].tolist()
    first, second, steps = _epoch_seconds(paths, manifest["grade"].tolist())
    images = len(sources)
    return {
        "scans": images,
        "source_pixels": f"{args.source_height}x{round(args.source_height * 1.2)}",
        "images_per_s": {
            "decode only": images / decode_s,
            "cache build (decode+preprocess+write)": images / cache_s,
            "stream epoch 1": steps * BATCH / first,
            "stream epoch 2": steps * BATCH / second,
        },
        "ratios": {
            "cache build / decode only (target >= 0.5)": decode_s / cache_s,
            "stream epoch 2 / epoch 1": first / second,
        },
    }

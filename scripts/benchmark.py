"""Speed ratios measured in one run, so a noisy shared machine cancels out.

    python scripts/benchmark.py checkpoint [--widths 64 128 256 512] [--repeats 15]
    python scripts/benchmark.py data [--patients 40] [--source-height 768]
    python scripts/benchmark.py all

Each benchmark prints a table and writes benchmarks/<name>.json. Figures are medians of
``--repeats`` runs, each pair of compared operations interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks"


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _raw_write_fsync(path: Path, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _checkpoint_state(widths: list[int], image_size: int):
    """A small_cnn of the given widths with Adam moments filled by one real step."""
    import keras
    import tensorflow as tf

    from retina.checkpoint import TrainingState
    from retina.config import ModelConfig, OptimizerConfig
    from retina.models import build_model
    from retina.training.optimizers import build_all, build_optimizers, variable_groups
    from retina.training.steps import make_train_step

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(widths=widths), image_size)
    optimizers = build_optimizers(OptimizerConfig(), "float32")
    groups = variable_groups(model, list(optimizers))
    build_all(optimizers, groups)
    images = tf.random.uniform((8, image_size, image_size, 3), maxval=255, dtype=tf.int32)
    dataset = tf.data.Dataset.from_tensors((tf.cast(images, tf.uint8), tf.range(8) % 5))
    iterator = iter(dataset.repeat())
    make_train_step(model, optimizers, groups)(*next(iterator))
    return TrainingState(model, optimizers, iterator)


def bench_checkpoint(args) -> dict:
    """Save vs raw write+fsync of the same bytes; non-blocking vs synchronous save (time
    until ``save()`` returns); restore vs raw read of the same files."""
    from retina.checkpoint import CheckpointStore, _files_of, _verified_read, damage

    state = _checkpoint_state(args.widths, args.image_size)
    work = Path(tempfile.mkdtemp(prefix="retina-bench-"))
    sync = CheckpointStore(work / "sync", state, {}, background=False)
    background = CheckpointStore(work / "background", state, {}, background=True)
    prefix = sync.save()
    background.save()
    background.wait()  # the first non-blocking save traces its snapshot function
    payload = b"".join(p.read_bytes() for p in _files_of(prefix))
    raw = work / "raw.bin"

    def blocking_part_of_background_save():
        started = time.perf_counter()
        background.save()
        elapsed = time.perf_counter() - started
        background.wait()  # outside the timing: the write overlaps training in real runs
        return elapsed

    def restore():
        assert damage(prefix) is None
        _verified_read(lambda: state.checkpoint.read(str(prefix)), prefix, complete=True)

    operations = {
        "save": lambda: _seconds(sync.save),
        "plain_tf_write": lambda: _seconds(lambda: state.checkpoint.write(str(work / "plain"))),
        "raw_write_fsync": lambda: _seconds(lambda: _raw_write_fsync(raw, payload)),
        "background_save_blocking": blocking_part_of_background_save,
        "restore": lambda: _seconds(restore),
        "raw_read": lambda: _seconds(lambda: [p.read_bytes() for p in _files_of(prefix)]),
    }
    samples = {name: [] for name in operations}
    for _ in range(args.repeats):  # interleaved: drift on a shared machine hits all alike
        for name, operation in operations.items():
            samples[name].append(operation())
    med = {name: statistics.median(values) for name, values in samples.items()}
    background.close()
    return {
        "checkpoint_mib": len(payload) / 2**20,
        "parameters": int(state.model.count_params()),
        "seconds": med,
        "ratios": {
            "save / raw write+fsync (target <= 1.5)": med["save"] / med["raw_write_fsync"],
            "plain tf.train.Checkpoint.write / raw write+fsync": med["plain_tf_write"]
            / med["raw_write_fsync"],
            "save / plain tf.train.Checkpoint.write": med["save"] / med["plain_tf_write"],
            "non-blocking save blocking / sync save (target <= 0.1)": med[
                "background_save_blocking"
            ]
            / med["save"],
            "restore / raw read": med["restore"] / med["raw_read"],
        },
    }


def _decode_only(path) -> tuple:
    from retina.data.cache import load_image

    return load_image(path).shape  # the array stays in the worker, as the cache's does


def bench_data(args) -> dict:
    """Cache build vs decode only, over the same files with the same worker processes;
    the training stream's second epoch vs its first (files from the cache)."""
    from retina.config import DataConfig, PreprocessConfig
    from retina.data.cache import build_cache
    from retina.data.pipeline import make_train_dataset
    from retina.data.sources import build_manifest
    from retina.data.synthetic import SyntheticSpec, ensure_synthetic_dataset
    from retina.parallel import run_parallel

    work = Path(tempfile.mkdtemp(prefix="retina-bench-data-"))
    spec = SyntheticSpec(n_patients=args.patients, image_height=args.source_height, seed=1)
    ensure_synthetic_dataset(work / "scans", spec)
    manifest, _ = build_manifest(DataConfig(root=str(work / "scans")))
    sources = [work / "scans" / p for p in manifest["path"]]
    decode_s = _seconds(lambda: run_parallel(_decode_only, sources, 0, "decode only"))
    cfg = PreprocessConfig(image_size=args.image_size)
    cache_s = _seconds(lambda: build_cache(manifest, work / "scans", cfg, work / "cache"))
    paths = build_cache(manifest, work / "scans", cfg, work / "cache")[0].tolist()
    batch = 32
    steps = len(paths) // batch
    iterator = iter(make_train_dataset(paths, manifest["grade"].tolist(), batch, seed=0))

    def epoch():
        for _ in range(steps):
            next(iterator)

    first, second = _seconds(epoch), _seconds(epoch)
    images = len(sources)
    return {
        "scans": images,
        "source_pixels": f"{args.source_height}x{round(args.source_height * 1.2)}",
        "images_per_s": {
            "decode only": images / decode_s,
            "cache build (decode+preprocess+write)": images / cache_s,
            "stream epoch 1": steps * batch / first,
            "stream epoch 2": steps * batch / second,
        },
        "ratios": {
            "cache build / decode only (target >= 0.5)": decode_s / cache_s,
            "stream epoch 2 / epoch 1": first / second,
        },
    }


BENCHMARKS = {"checkpoint": bench_checkpoint, "data": bench_data}


def _print_table(name: str, result: dict) -> None:
    print(f"\n## {name}")
    for key, value in result.items():
        rows = value.items() if isinstance(value, dict) else [("", value)]
        for inner, number in rows:
            shown = f"{number:10.4f}" if isinstance(number, float) else f"{number!s:>10}"
            print(f"  {key:<10} {inner:<45} {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=[*BENCHMARKS, "all"])
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[64, 128, 256, 512],
        help="small_cnn widths of the benchmarked model",
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--patients", type=int, default=40, help="data: synthetic patients")
    parser.add_argument("--source-height", type=int, default=768, help="data: scan height")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    OUT_DIR.mkdir(exist_ok=True)
    for name in names:
        result = BENCHMARKS[name](args)
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
        result["command"] = " ".join(["python", "scripts/benchmark.py", *(argv or sys.argv[1:])])
        (OUT_DIR / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        _print_table(name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

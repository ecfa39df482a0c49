"""Speed ratios measured in one run, so a noisy shared machine cancels out.

    python scripts/benchmark.py checkpoint [--widths 64 128 256 512] [--repeats 15]
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


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


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
    """Save vs raw write+fsync of the same bytes; restore vs raw read of them."""
    from retina.checkpoint import CheckpointFolder, _files_of, _verified_read, damage

    state = _checkpoint_state(args.widths, args.image_size)
    work = Path(tempfile.mkdtemp(prefix="retina-bench-"))
    folder = CheckpointFolder(work / "latest", state, {})
    prefix = folder.save("latest")
    payload = b"".join(p.read_bytes() for p in _files_of(prefix))
    raw = work / "raw.bin"

    def save():
        folder.save("latest")

    def plain_write():  # the usual recipe's write: no hashes, no fsync, no sidecar
        state.checkpoint.write(str(work / "plain" / "ckpt"))

    def restore():
        assert damage(prefix) is None
        _verified_read(lambda: state.checkpoint.read(str(prefix)), prefix, complete=True)

    def raw_read():
        for path in _files_of(prefix):
            path.read_bytes()

    save_s, plain_s, raw_write_s, restore_s, raw_read_s = [], [], [], [], []
    for _ in range(args.repeats):  # interleaved: drift on a shared machine hits both sides
        save_s.append(_median_seconds(save, 1))
        plain_s.append(_median_seconds(plain_write, 1))
        raw_write_s.append(_median_seconds(lambda: _raw_write_fsync(raw, payload), 1))
        restore_s.append(_median_seconds(restore, 1))
        raw_read_s.append(_median_seconds(raw_read, 1))
    med = {
        k: statistics.median(v)
        for k, v in dict(
            save=save_s,
            plain_tf_write=plain_s,
            raw_write=raw_write_s,
            restore=restore_s,
            raw_read=raw_read_s,
        ).items()
    }
    return {
        "checkpoint_mib": len(payload) / 2**20,
        "parameters": int(state.model.count_params()),
        "seconds": med,
        "ratios": {
            "save / raw write+fsync (target <= 1.5)": med["save"] / med["raw_write"],
            "plain tf.train.Checkpoint.write / raw write+fsync": med["plain_tf_write"]
            / med["raw_write"],
            "save / plain tf.train.Checkpoint.write": med["save"] / med["plain_tf_write"],
            "restore / raw read": med["restore"] / med["raw_read"],
        },
    }


BENCHMARKS = {"checkpoint": bench_checkpoint}


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

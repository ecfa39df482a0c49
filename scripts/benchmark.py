"""Speed ratios measured in one run, so a noisy shared machine cancels out.

    python scripts/benchmark.py checkpoint [--widths 64 128 256 512] [--repeats 15]
    python scripts/benchmark.py data [--patients 40] [--source-height 768]
    python scripts/benchmark.py train [--train-patients 300] [--repeats 5]
    python scripts/benchmark.py distributed [--train-patients 300] [--repeats 3]
    python scripts/benchmark.py precision [--precision-models small_cnn efficientnet_b0]
    python scripts/benchmark.py scale [--scale-sizes 1000 4000 16000] [--heavy-scans 600]
    python scripts/benchmark.py uncertainty [--mc-samples 20] [--uncertainty-scans 512]
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
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would drown the table
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
    import numpy as np
    import tensorflow as tf

    from retina.checkpoint import TrainingState
    from retina.config import LossConfig, ModelConfig, OptimizerConfig, ScheduleConfig
    from retina.models import build_model
    from retina.training.losses import make_loss
    from retina.training.optimizers import RateSetup, build_all, build_optimizers, variable_groups
    from retina.training.steps import make_train_function

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(widths=widths), image_size)
    rates = RateSetup(ScheduleConfig(), 1, 1, tf.Variable(1.0))
    optimizers = build_optimizers(OptimizerConfig(), "float32", rates)
    groups = variable_groups(model, list(optimizers))
    build_all(optimizers, groups)
    images = tf.random.uniform((8, image_size, image_size, 3), maxval=255, dtype=tf.int32)
    dataset = tf.data.Dataset.from_tensors((tf.cast(images, tf.uint8), tf.range(8) % 5))
    iterator = iter(dataset.repeat())
    state = TrainingState(model=model, optimizers=optimizers, iterator=iterator)
    loss = make_loss(LossConfig(), "grades", 5, np.arange(8) % 5)
    make_train_function(state, groups=groups, loss=loss)(iterator, 1)
    return state


def bench_checkpoint(args) -> dict:
    """Save vs raw write+fsync of the same bytes; non-blocking vs synchronous save (time
    until ``save()`` returns); restore vs raw read of the same files."""
    from retina.checkpoint.files import damage, data_files
    from retina.checkpoint.read import verified_read
    from retina.checkpoint.store import CheckpointStore

    state = _checkpoint_state(args.widths, args.image_size)
    work = Path(tempfile.mkdtemp(prefix="retina-bench-"))
    sync = CheckpointStore(work / "sync", state, {}, background=False)
    background = CheckpointStore(work / "background", state, {}, background=True)
    prefix = sync.save()
    background.save()
    background.wait()  # the first non-blocking save traces its snapshot function
    payload = b"".join(p.read_bytes() for p in data_files(prefix))
    raw = work / "raw.bin"

    def blocking_part_of_background_save():
        started = time.perf_counter()
        background.save()
        elapsed = time.perf_counter() - started
        background.wait()  # outside the timing: the write overlaps training in real runs
        return elapsed

    def restore():
        assert damage(prefix) is None
        verified_read(lambda: state.checkpoint.read(str(prefix)), prefix, complete=True)

    operations = {
        "save": lambda: _seconds(sync.save),
        "plain_tf_write": lambda: _seconds(lambda: state.checkpoint.write(str(work / "plain"))),
        "raw_write_fsync": lambda: _seconds(lambda: _raw_write_fsync(raw, payload)),
        "background_save_blocking": blocking_part_of_background_save,
        "restore": lambda: _seconds(restore),
        "raw_read": lambda: _seconds(lambda: [p.read_bytes() for p in data_files(prefix)]),
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
    from retina.data.images import read_image_rgb

    return read_image_rgb(
        path, "benchmark"
    ).shape  # the array stays in the worker, as the cache's does


def bench_data(args) -> dict:
    """Cache build vs decode only, over the same files with the same worker processes;
    the training stream's second epoch vs its first (files from the cache)."""
    from retina.config import DataConfig, PreprocessConfig, SyntheticConfig
    from retina.data.cache import build_cache
    from retina.data.pipeline import make_train_dataset
    from retina.data.sources import build_manifest
    from retina.data.synthetic import ensure_synthetic_dataset
    from retina.parallel import run_parallel

    work = Path(tempfile.mkdtemp(prefix="retina-bench-data-"))
    spec = SyntheticConfig(n_patients=args.patients, image_height=args.source_height, seed=1)
    ensure_synthetic_dataset(work / "scans", spec)
    manifest, _ = build_manifest(DataConfig(root=str(work / "scans")))
    sources = [work / "scans" / p for p in manifest["path"]]
    decode_s = _seconds(lambda: run_parallel(_decode_only, sources, 0, "decode only"))
    cfg = PreprocessConfig(image_size=args.image_size)
    cache_s = _seconds(lambda: build_cache(manifest, work / "scans", cfg, work / "cache"))
    paths = build_cache(manifest, work / "scans", cfg, work / "cache")[0]["cache_path"].tolist()
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


def _train_config(args, work: Path, **train):
    from dataclasses import replace

    from retina.config import RunConfig

    cfg = RunConfig()
    data = replace(cfg.data, root=str(work / "scans"), cache_dir=str(work / "cache"))
    data.synthetic.n_patients = args.train_patients
    data.synthetic.image_height = 192
    loop = replace(cfg.train, tensorboard=False, evaluate_test=False, precision="float32")
    return replace(
        cfg,
        data=data,
        preprocess=replace(cfg.preprocess, image_size=args.image_size),
        train=replace(loop, **train),
    )


class _FitTimer:
    """Seconds of each ``model.fit`` epoch from its first batch on (its iterator start-up
    and first prefetch left out: a favour to fit)."""

    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == 0:
                    timer.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                timer.seconds.append(time.perf_counter() - timer.started)

        self.callback, self.seconds, self.started = Callback(), [], 0.0


def _fit_model(cfg, session):
    """The same architecture, optimizer, loss and stream, compiled for ``model.fit``."""
    import keras

    from retina.models import build_model

    model = build_model(cfg.model, cfg.preprocess.image_size)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.optimizer.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model, _stream(cfg, session)


def _with_iterator(session, iterator):
    """The same session (model, optimizers, compiled steps) drawing from another stream."""
    import copy
    import dataclasses

    state = copy.copy(session.state)
    state.iterator = iterator
    return dataclasses.replace(session, state=state)


def bench_train(args) -> dict:
    """(a) the custom loop against model.fit, (b) the real stream against tensors already in
    memory (precision: see ``precision``)."""
    import dataclasses

    import tensorflow as tf

    from retina.run_dir import StepLog
    from retina.training.loop import run_steps
    from retina.training.preemption import StopSignal
    from retina.training.session import open_session

    work = Path(tempfile.mkdtemp(prefix="retina-bench-train-"))
    cfg = _train_config(args, work)
    session = open_session(cfg, work / "fp32")
    spe = session.steps_per_epoch
    steps_log = StepLog(work / "steps.csv", 0)
    position = {"step": 0}

    def loop_epoch(which):
        first = position["step"] + 1
        position["step"] += spe
        with StopSignal() as stop:
            return _seconds(lambda: run_steps(which, first, first + spe - 1, steps_log, stop))

    batch = next(iter(session.state.iterator))  # one real batch, repeated from memory
    in_memory = _with_iterator(session, iter(tf.data.Dataset.from_tensors(batch).repeat()))
    streamed_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, memory_cache_mb=0))
    streamed = _with_iterator(session, iter(_stream(streamed_cfg, session)))
    light_cfg = dataclasses.replace(cfg, augment=_augment_preset("light"))
    light = _with_iterator(session, iter(_stream(light_cfg, session)))
    fit_model, fit_data = _fit_model(cfg, session)
    fit_timer = _FitTimer()

    def fit_epoch():
        fit_model.fit(
            fit_data, epochs=1, steps_per_epoch=spe, verbose=0, callbacks=[fit_timer.callback]
        )
        return fit_timer.seconds[-1]

    operations = {
        "custom loop (real stream)": lambda: loop_epoch(session),
        "model.fit (real stream)": fit_epoch,
        "custom loop (tensors in memory)": lambda: loop_epoch(in_memory),
        "custom loop (stream from PNG files)": lambda: loop_epoch(streamed),
        "custom loop (real stream, augment=light)": lambda: loop_epoch(light),
    }
    for operation in operations.values():  # warm-up: tracing and the first prefetch
        operation()
    samples = {name: [] for name in operations}
    for _ in range(args.repeats):
        for name, operation in operations.items():
            samples[name].append(operation())
    med = {name: statistics.median(values) for name, values in samples.items()}
    images = spe * cfg.train.batch_size
    result = {
        "train_scans": len(session.train_rows),
        "steps_per_epoch": spe,
        "batch": cfg.train.batch_size,
        "image_size": cfg.preprocess.image_size,
        "model": cfg.model.name,
        "images_per_s": {name: images / seconds for name, seconds in med.items()},
        "epoch_seconds_samples": {name: [round(v, 3) for v in vs] for name, vs in samples.items()},
        "ratios": {
            "(a) custom loop / model.fit, steps/s (target >= 1.0)": med["model.fit (real stream)"]
            / med["custom loop (real stream)"],
            "(b) real stream / tensors in memory, images/s (target >= 0.95)": med[
                "custom loop (tensors in memory)"
            ]
            / med["custom loop (real stream)"],
            "    stream from PNG files / tensors in memory": med["custom loop (tensors in memory)"]
            / med["custom loop (stream from PNG files)"],
            "    augment=light stream / tensors in memory": med["custom loop (tensors in memory)"]
            / med["custom loop (real stream, augment=light)"],
        },
    }
    return result


def conf_preset(group: str, name: str, schema):
    """``<group>=<name>`` as Hydra composes it: the option's YAML over the schema."""
    from omegaconf import OmegaConf

    preset = OmegaConf.load(ROOT / "retina" / "conf" / group / f"{name}.yaml")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), preset))


def _augment_preset(name: str):
    from retina.config import AugmentConfig

    return conf_preset("augment", name, AugmentConfig)


def _stream(cfg, session):
    """The training stream ``cfg`` describes, over the session's training scans."""
    from retina.data.pipeline import StreamOptions, make_train_dataset

    rows = session.train_rows
    return make_train_dataset(
        rows["cache_path"].tolist(),
        rows["grade"].tolist(),
        cfg.train.batch_size,
        cfg.seed,
        cfg.augment,
        StreamOptions(cfg.train.sampler, cfg.train.memory_cache_mb),
    )


def _train_processes(work: Path, tag: str, overrides: list[str], workers: int) -> dict:
    """``python -m retina.train`` as ``workers`` processes (multi-worker over 127.0.0.1 when
    more than one); returns the chief's per-epoch img/s and the wall time of the slowest."""
    import subprocess

    import pandas as pd

    from retina.training.distribute import loopback_tf_configs

    run_dir = work / tag
    configs = loopback_tf_configs(workers) if workers > 1 else [None]
    strategy = "multi_worker" if workers > 1 else "default"
    started, processes = time.perf_counter(), []
    for tf_config in configs:
        env = {**os.environ, **({"TF_CONFIG": tf_config} if tf_config else {})}
        command = [sys.executable, "-m", "retina.train", *overrides]
        command += [f"hydra.run.dir={run_dir}", f"trainer.strategy={strategy}"]
        processes.append(
            subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    for process in processes:
        _, errors = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{tag}: exit {process.returncode}: {errors.decode()[-2000:]}")
    history = pd.read_csv(run_dir / "history.csv")
    return {
        "images_per_s": history["images_per_s"].tolist(),
        "wall_s": time.perf_counter() - started,
    }


def bench_distributed(args) -> dict:
    """Training throughput of 2 workers (MultiWorkerMirroredStrategy over loopback, BatchNorm
    synchronized) against 1 process: same data, model and global batch, epochs after the
    first (tracing) only, the two interleaved ``--repeats`` times."""
    work = Path(tempfile.mkdtemp(prefix="retina-bench-distributed-"))
    overrides = [
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


def bench_precision(args) -> dict:
    """Training images/s under float32, mixed_bfloat16 and mixed_float16, per model."""
    sys.path.insert(0, str(Path(__file__).parent))
    from precision_benchmark import bench_precision as precision

    work = Path(tempfile.mkdtemp(prefix="retina-bench-precision-"))
    return precision(args, _train_config(args, work))


def bench_scale(args) -> dict:
    """Start-up, ingest, epoch and evaluation as the scans grow; stream rates per format."""
    sys.path.insert(0, str(Path(__file__).parent))
    from scale_benchmark import bench_scale as scale

    return scale(args)


def bench_uncertainty(args) -> dict:
    """Evaluation time with mc_dropout, tta and a 5-member ensemble over time with none."""
    sys.path.insert(0, str(Path(__file__).parent))
    from uncertainty_benchmark import bench_uncertainty as uncertainty

    return uncertainty(args)


BENCHMARKS = {
    "checkpoint": bench_checkpoint,
    "data": bench_data,
    "train": bench_train,
    "distributed": bench_distributed,
    "precision": bench_precision,
    "scale": bench_scale,
    "uncertainty": bench_uncertainty,
}


def _print_table(name: str, result: dict) -> None:
    print(f"\n## {name}")
    for key, value in result.items():
        if key.endswith("_samples"):  # in the JSON file only
            continue
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
    parser.add_argument("--train-patients", type=int, default=300, help="train: synthetic patients")
    parser.add_argument("--precision-models", nargs="+", default=["small_cnn", "efficientnet_b0"])
    parser.add_argument("--precision-steps", type=int, default=5, help="precision: per round")
    parser.add_argument(
        "--precision-budget", type=float, default=30.0, help="precision: seconds per round"
    )
    parser.add_argument("--scale-sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--scale-source", type=int, default=512, help="scale: scan height")
    parser.add_argument("--heavy-scans", type=int, default=600, help="scale: 2048 px scans")
    parser.add_argument(
        "--scale-work", default=str(Path(tempfile.gettempdir()) / "retina-bench-scale")
    )
    parser.add_argument("--mc-samples", type=int, default=20, help="uncertainty: MC samples")
    parser.add_argument("--uncertainty-scans", type=int, default=512, help="uncertainty: scans")
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

"""``python scripts/benchmark.py scale [--scale-sizes 1000 4000 16000] [--heavy-scans 600]
[--scale-parts sets stream eyepacs] [--baseline-commit C]``: what start-up, ingest, an
epoch and an evaluation cost as the number of scans grows, how fast each cache format
streams at 512 px, and the cold ingest of EyePACS-size photographs (``bench.eyepacs``).

Folder-layout sets of distinct JPEG scans (each a rendered fundus with its own noise, so
no two files share bytes) at ``--scale-sizes`` scans of ``--scale-source`` px, plus one
byte-heavy set of 2048 px photographs. Per set, through the real entry points:

- cold ingest (in-process ``build_cache``): scans/s and source MB/s;
- one epoch of a fixed small model (small_cnn 8-16 at 64 px, batch 32, in-memory scan
  cache off so memory is the program's own): seconds, from ``history.csv``;
- warm start-up: re-launching the finished run (``Nothing to do``), seconds;
- evaluation with start-up excluded: every scan of the run scored by the restored model
  and the evaluation metrics computed, after one warm-up batch has traced the predict
  step, seconds per 1,000 scans. All sets in one process, in turn, five rounds, the
  fastest pass of each: on this shared machine separate processes minutes apart measured
  the same set 0.43 to 0.69 s per 1,000 (the machine's speed drifts; interleaving puts
  every set in the same spells), while passes of 250 to 4,000 scans in one process gave
  0.49 to 0.56;
- peak RSS of the training and the evaluation process (``os.wait4``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import eyepacs
from bench.common import ROOT

BASES = 12  # rendered photographs the scans are made from
PARTS = ["sets", "stream", "eyepacs"]
SMALL_MODEL = ["model.widths=[8,16]", "preprocess.image_size=64", "train.batch_size=32"]


def add_arguments(parser) -> None:
    parser.add_argument("--scale-sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--scale-source", type=int, default=512, help="scale: scan height")
    parser.add_argument("--heavy-scans", type=int, default=600, help="scale: 2048 px scans")
    parser.add_argument(
        "--scale-work", default=str(Path(tempfile.gettempdir()) / "retina-bench-scale")
    )
    parser.add_argument(
        "--scale-parts", nargs="+", choices=PARTS, default=PARTS, help="scale: what to run"
    )
    eyepacs.add_arguments(parser)


def _render_bases(height: int) -> list[np.ndarray]:
    from retina.data.synthetic import render_fundus

    return [
        render_fundus(np.random.default_rng(i), i % 5, "RL"[i % 2], height) for i in range(BASES)
    ]


def _write_scan(job) -> int:
    """One distinct scan: a base photograph with noise of its own; returns its size."""
    from PIL import Image

    base, path, seed = job
    noise = np.random.default_rng(seed).integers(-4, 5, base.shape)
    pixels = np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path.stat().st_size


def make_set(root: Path, scans: int, height: int) -> dict:
    """A folder-layout set of ``scans`` distinct JPEGs, two eyes per patient."""
    import pandas as pd

    from retina.data.parallel import run_parallel

    if (root / "labels.csv").is_file():
        return json.loads((root / "set.json").read_text())
    (root / "scans").mkdir(parents=True, exist_ok=True)
    bases = _render_bases(height)
    jobs = [(bases[i % BASES], root / "scans" / f"{i:06d}.jpg", i) for i in range(scans)]
    sizes = run_parallel(_write_scan, jobs, 0, f"{scans} scans")
    labels = pd.DataFrame(
        {
            "path": [f"scans/{i:06d}.jpg" for i in range(scans)],
            "grade": [(i % BASES) % 5 for i in range(scans)],
            "patient": [f"p{i // 2}" for i in range(scans)],
        }
    )
    labels.to_csv(root / "labels.csv", index=False)
    facts = {"scans": scans, "megabytes": sum(sizes) / 2**20, "source_px": height}
    (root / "set.json").write_text(json.dumps(facts))
    return facts


def _run(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, output) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, output


def _cold_ingest(root: Path, cache: Path) -> float:
    code = (
        "import sys, time, pandas as pd\n"
        "from retina.config import PreprocessConfig\n"
        "from retina.data.cache import build_cache\n"
        "root, cache = sys.argv[1:3]\n"
        "rows = pd.read_csv(f'{root}/labels.csv')\n"
        "started = time.perf_counter()\n"
        "build_cache(rows, root, PreprocessConfig(image_size=64), cache)\n"
        "print('SECONDS', time.perf_counter() - started)\n"
    )
    _, _, output = _run([sys.executable, "-c", code, str(root), str(cache)], ROOT)
    return float(output.split("SECONDS")[-1])


EVALUATION_WITHOUT_START_UP = """
import sys, time
from retina.data.pipeline import make_eval_dataset
from retina.data.prepare import prepare_run_data
from retina.inference.outputs import make_predict_step, predict_dataset
from retina.inference.restore import load_run_model
from retina.metrics.rates import referable_probability
from retina.metrics.summary import evaluation_metrics
runs = {}
for run in sys.argv[1:]:
    cfg, model, path = load_run_model(run, "latest")
    rows = prepare_run_data(cfg, run)
    step = make_predict_step(model)
    predict_dataset(step, make_eval_dataset(rows["cache_path"].tolist()[:64], [0] * 64, 64))
    runs[run] = (rows, step, [])
for _ in range(ROUNDS):  # the runs interleaved, so a slow spell of the machine hits all
    for run, (rows, step, seconds) in runs.items():
        started = time.perf_counter()
        dataset = make_eval_dataset(rows["cache_path"].tolist(), rows["grade"].tolist(), 64)
        truth, probabilities = predict_dataset(step, dataset)
        evaluation_metrics(truth, probabilities.argmax(1), referable_probability(probabilities),
                           rows["patient"].to_numpy(), {"default": 0.5}, n_resamples=200)
        seconds.append(time.perf_counter() - started)
for run, (rows, _, seconds) in runs.items():
    print("SCORED", run, len(rows), min(seconds))
"""
EVALUATION_ROUNDS = 5


def evaluation_rates(run_dirs: list[Path]) -> dict[str, float]:
    """Seconds per 1,000 scans of each run's evaluation, start-up excluded: one process
    scores every run in turn, ``EVALUATION_ROUNDS`` rounds, the fastest pass of each."""
    code = EVALUATION_WITHOUT_START_UP.replace("ROUNDS", str(EVALUATION_ROUNDS))
    _, _, output = _run([sys.executable, "-c", code, *map(str, run_dirs)], ROOT)
    rates = {}
    for line in output.splitlines():
        if line.startswith("SCORED"):
            _, run, scans, seconds = line.split()
            rates[run] = float(seconds) / int(scans) * 1000
    return rates


def measure_set(root: Path, facts: dict, work: Path) -> dict:
    import pandas as pd

    cache, run_dir = work / f"cache-{root.name}", work / f"run-{root.name}"
    for left_over in (cache, run_dir):  # from an earlier run: the ingest must be cold
        shutil.rmtree(left_over, ignore_errors=True)
    ingest_s = _cold_ingest(root, cache)
    train = [
        sys.executable,
        "-m",
        "retina.train",
        "data=folder",
        f"data.root={root}",
        "data.labels_csv=labels.csv",
        "data.patient_column=patient",
        f"data.cache_dir={cache}",
        *SMALL_MODEL,
        "train.epochs=1",
        "train.memory_cache_mb=0",
        "train.evaluate_test=false",
        "train.tensorboard=false",
        f"hydra.run.dir={run_dir}",
    ]
    _, train_rss, _ = _run(train, work)
    warm_s, _, _ = _run(train, work)  # nothing left to train: start-up only
    evaluate = [sys.executable, "-m", "retina.evaluate", f"run_dir={run_dir}"]
    _, evaluate_rss, _ = _run([*evaluate, "bootstrap_resamples=200"], work)
    return {
        "scans": facts["scans"],
        "source_px": facts["source_px"],
        "source_MB": round(facts["megabytes"], 1),
        "cold_ingest_scans_per_s": facts["scans"] / ingest_s,
        "cold_ingest_MB_per_s": facts["megabytes"] / ingest_s,
        "epoch_s": float(pd.read_csv(run_dir / "history.csv")["seconds"].iloc[0]),
        "warm_start_up_s": warm_s,
        "run_dir": str(run_dir),
        "train_peak_rss_MiB": train_rss,
        "evaluate_peak_rss_MiB": evaluate_rss,
    }


def stream_rates(work: Path, size: int = 512, count: int = 256) -> dict:
    """Images/s per core (one tf.data thread) of the training stream's decode, flip and
    batch, per cache format: per-scan PNG, per-scan JPEG (quality 95), and raw uint8 in a
    TFRecord shard."""
    import tensorflow as tf
    from PIL import Image

    from retina.config import PreprocessConfig
    from retina.data.cache_entry import JPEG_QUALITY
    from retina.data.fundus import preprocess_fundus

    folder = work / "stream"
    folder.mkdir(exist_ok=True)
    cfg = PreprocessConfig(image_size=size)
    bases = [preprocess_fundus(image, cfg) for image in _render_bases(int(size * 1.1))]
    record = folder / "raw.tfrecord"
    with tf.io.TFRecordWriter(str(record)) as writer:
        for i in range(count):
            noise = np.random.default_rng(i).integers(-4, 5, bases[0].shape)
            pixels = np.clip(bases[i % BASES].astype(np.int16) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=JPEG_QUALITY)
            writer.write(pixels.tobytes())
    shape = (size, size, 3)
    formats = {
        "png": ([str(folder / f"{i}.png") for i in range(count)], None),
        "jpeg": ([str(folder / f"{i}.jpg") for i in range(count)], None),
        "raw_tfrecord": (None, str(record)),
    }
    return {name: _one_core_rate(files, shard, shape) for name, (files, shard) in formats.items()}


def _one_core_rate(files, shard, shape, seconds: float = 8.0) -> float:
    import tensorflow as tf

    from retina.data.pipeline import decode_cached

    if files:
        dataset = tf.data.Dataset.from_tensor_slices(files).map(decode_cached)
    else:
        raw = tf.data.TFRecordDataset(shard).map(lambda b: tf.io.decode_raw(b, tf.uint8))
        dataset = raw.map(lambda pixels: tf.reshape(pixels, shape))
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    dataset = dataset.repeat().map(tf.image.flip_left_right).batch(32).prefetch(1)
    iterator = iter(dataset.with_options(options))
    next(iterator)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        next(iterator)
        images += 32
    return images / (time.perf_counter() - started)


def _ratios(small: list[dict]) -> dict:
    """The largest set of ``--scale-source`` px scans against the smallest."""
    first, last = small[0], small[-1]
    per_1k = [row["evaluation_s_per_1k_scans"] for row in small]
    sizes = f"{last['scans']} / {first['scans']}"
    return {
        f"warm start-up {sizes} scans (target <= 1.5)": last["warm_start_up_s"]
        / first["warm_start_up_s"],
        "evaluation s per 1k scans, max / min over sizes (target <= 1.2)": max(per_1k)
        / min(per_1k),
        f"training peak RSS {sizes} (target <= 1.2)": last["train_peak_rss_MiB"]
        / first["train_peak_rss_MiB"],
        f"evaluation peak RSS {sizes}": last["evaluate_peak_rss_MiB"]
        / first["evaluate_peak_rss_MiB"],
    }


def run(args) -> dict:
    """Start-up, ingest, epoch and evaluation as the scans grow; stream rates per format;
    cold ingest of EyePACS-size photographs (``bench.eyepacs``)."""
    work = Path(args.scale_work)
    work.mkdir(parents=True, exist_ok=True)
    result = {}
    if "sets" in args.scale_parts:
        result.update(_sets(args, work))
    if "stream" in args.scale_parts:
        result["stream_images_per_s_per_core_512px"] = stream_rates(work)
    if "eyepacs" in args.scale_parts:
        result.update(eyepacs.run_eyepacs(args, work))
    return result


def _sets(args, work: Path) -> dict:
    sets = [(work / f"set-{n}", n, args.scale_source) for n in args.scale_sizes]
    sets.append((work / f"set-heavy-{args.heavy_scans}", args.heavy_scans, 2048))
    rows = [measure_set(root, make_set(root, n, px), work) for root, n, px in sets]
    rates = evaluation_rates([Path(row["run_dir"]) for row in rows])
    for row in rows:
        row["evaluation_s_per_1k_scans"] = rates[row.pop("run_dir")]
    small = [row for row in rows if row["source_px"] == args.scale_source]
    return {"sets": rows, "ratios": _ratios(small)}

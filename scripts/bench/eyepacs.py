"""Part of ``python scripts/benchmark.py scale``: cold ingest of EyePACS-size photographs.

``--eyepacs-scans`` distinct 3888 x 2592 JPEGs (quality 92; scikit-image's fundus
photograph across the height of the frame, each with sensor noise of its own, so no two
files share bytes) are ingested into a 512 px cache. Per round, each in its own process,
timed inside it (imports excluded), interleaved so a slow spell of the machine hits all:

- decode only: Pillow decodes every file at full resolution (``Image.load``), one core;
- ingest, one worker: ``build_cache(..., workers=1)`` into an empty cache;
- ingest, all workers: ``workers=0`` (one process per core), their start-up included;
- ingest by ``--baseline-commit``'s code (``git archive`` of that commit's ``retina``),
  one worker, of the first ``--baseline-scans``: the rate before a change, same run.

Figures are the median over ``--eyepacs-rounds`` rounds; peak RSS of the one-worker
ingest process (``VmHWM``: ``ru_maxrss`` would carry the benchmark's own over ``exec``)
and of the largest all-workers worker (``RUSAGE_CHILDREN``: an upper bound, since a
spawned worker's count starts from its parent's size at the fork).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from bench.common import ROOT

EYEPACS_SIZE = (3888, 2592)  # width, height: an EyePACS camera's 10 MP frame
CACHE_PX = 512

DECODE_ONLY = """
import sys, time
from PIL import Image
paths = sys.argv[1:]
started = time.perf_counter()
for path in paths:
    with Image.open(path) as image:
        image.load()
print("RESULT", len(paths) / (time.perf_counter() - started), 0)
"""
INGEST = """
import resource, shutil, sys, time, pandas as pd
from retina.config import PreprocessConfig
from retina.data.cache import build_cache
root, cache, workers, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = pd.read_csv(f"{root}/labels.csv").head(limit)
shutil.rmtree(cache, ignore_errors=True)
started = time.perf_counter()
build_cache(rows, root, PreprocessConfig(image_size=SIZE), cache, workers=workers)
seconds = time.perf_counter() - started
own = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("RESULT", len(rows) / seconds, children if workers != 1 else int(own.split()[1]) / 1024)
""".replace("SIZE", str(CACHE_PX))


def add_arguments(parser) -> None:
    parser.add_argument("--eyepacs-scans", type=int, default=600, help="scale: 3888x2592 JPEGs")
    parser.add_argument(
        "--baseline-scans", type=int, default=48, help="scale: how many the baseline ingests"
    )
    parser.add_argument("--eyepacs-rounds", type=int, default=3)
    parser.add_argument("--baseline-commit", help="scale: ingest by this commit's code too")


def _write_scan(job) -> None:
    from PIL import Image

    base, path, seed = job
    noise = np.random.default_rng(seed).normal(0, 4, base.shape)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)


def make_eyepacs_set(root: Path, scans: int) -> dict:
    """A folder-layout set of ``scans`` distinct EyePACS-size JPEGs."""
    import pandas as pd
    from PIL import Image
    from skimage import data

    from retina.data.parallel import run_parallel

    if (root / "set.json").is_file():
        return json.loads((root / "set.json").read_text())
    (root / "scans").mkdir(parents=True, exist_ok=True)
    width, height = EYEPACS_SIZE
    photo = np.asarray(Image.fromarray(data.retina()).resize((height, height), Image.BICUBIC))
    base = np.zeros((height, width, 3), np.float32)
    base[:, (width - height) // 2 : (width + height) // 2] = photo
    names = [f"scans/{i:05d}.jpg" for i in range(scans)]
    run_parallel(_write_scan, [(base, root / name, i) for i, name in enumerate(names)], 0, "set")
    pd.DataFrame({"path": names, "grade": 0, "patient": names}).to_csv(root / "labels.csv")
    megabytes = sum((root / name).stat().st_size for name in names) / 2**20
    facts = {"scans": scans, "source_px": f"{width}x{height}", "source_MB": round(megabytes, 1)}
    (root / "set.json").write_text(json.dumps(facts))
    return facts


def _baseline_code(commit: str, work: Path) -> Path:
    """The ``retina`` package as ``commit`` had it, unpacked under ``work``."""
    folder = work / f"baseline-{commit}"
    if not (folder / "retina").is_dir():
        archive = subprocess.run(
            ["git", "archive", commit, "retina"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        folder.mkdir(parents=True, exist_ok=True)
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(folder, filter="data")
    return folder


def _measure(code: str, args: list[str], code_root: Path = ROOT) -> tuple[float, float]:
    """(scans/s, peak RSS in MiB) that one process reports of its own work."""
    environment = {**os.environ, "PYTHONPATH": str(code_root), "TQDM_DISABLE": "1"}
    output = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=code_root,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate, rss = output.split("RESULT")[-1].split()
    return float(rate), float(rss)


def run_eyepacs(args, work: Path) -> dict:
    """Rates (scans/s) of decode-only and of ingest (one worker, all workers, baseline)."""
    from retina.data.parallel import cpu_count

    root = work / f"set-eyepacs-{args.eyepacs_scans}"
    facts = make_eyepacs_set(root, args.eyepacs_scans)
    paths = [str(path) for path in sorted((root / "scans").iterdir())]
    cache = str(work / "cache-eyepacs")
    every = str(facts["scans"])
    operations = {
        "decode_only_1_core": (DECODE_ONLY, paths, ROOT),
        "ingest_1_worker": (INGEST, [str(root), cache, "1", every], ROOT),
        "ingest_all_workers": (INGEST, [str(root), cache, "0", every], ROOT),
    }
    if args.baseline_commit:
        code = _baseline_code(args.baseline_commit, work)
        baseline = [str(root), cache, "1", str(args.baseline_scans)]
        operations["ingest_1_worker_baseline"] = (INGEST, baseline, code)
    samples = {name: [] for name in operations}
    for _ in range(args.eyepacs_rounds):
        for name, (code, arguments, code_root) in operations.items():
            samples[name].append(_measure(code, arguments, code_root))
    rates = {name: statistics.median(rate for rate, _ in runs) for name, runs in samples.items()}
    rss = {name: max(peak for _, peak in runs) for name, runs in samples.items()}
    return {
        "eyepacs_set": {**facts, "cores": cpu_count()},
        "eyepacs_scans_per_s": rates,
        "eyepacs_peak_rss_MiB": {name: rss[name] for name in rss if name.startswith("ingest")},
        "eyepacs_ratios": _ratios(rates, cpu_count()),
    }


def _ratios(rates: dict, cores: int) -> dict:
    ratios = {
        "ingest per core / decode-only per core (target >= 1.0)": rates["ingest_1_worker"]
        / rates["decode_only_1_core"],
        f"ingest all workers / one worker (target >= {0.8 * cores:.1f})": rates[
            "ingest_all_workers"
        ]
        / rates["ingest_1_worker"],
    }
    if "ingest_1_worker_baseline" in rates:
        ratios["ingest per core / baseline's (target >= 8)"] = (
            rates["ingest_1_worker"] / rates["ingest_1_worker_baseline"]
        )
    return ratios

"""Speed ratios measured in one run, so a noisy shared machine cancels out.

    python scripts/benchmark.py checkpoint [--widths 64 128 256 512] [--repeats 15]
    python scripts/benchmark.py data [--patients 40] [--source-height 768]
    python scripts/benchmark.py train [--train-patients 300] [--repeats 5]
    python scripts/benchmark.py distributed [--train-patients 300] [--repeats 3]
    python scripts/benchmark.py precision [--precision-models small_cnn efficientnet_b0]
    python scripts/benchmark.py scale [--scale-sizes 1000 4000 16000] [--heavy-scans 600]
                                      [--scale-parts sets stream eyepacs] [--baseline-commit C]
    python scripts/benchmark.py uncertainty [--mc-samples 20] [--uncertainty-scans 512]
    python scripts/benchmark.py quality [--quality-patients 400] [--quality-epochs 14]
                                        [--quality-seeds 1]
    python scripts/benchmark.py all

Each benchmark prints a table and writes benchmarks/<name>.json. Figures are medians of
``--repeats`` runs, each pair of compared operations interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would drown the table
SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
OUT_DIR = ROOT / "benchmarks"


def _benchmarks() -> dict:
    """Each benchmark's module (``scripts/bench/``), in the order ``all`` runs them."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    sys.path.insert(0, str(ROOT))
    from bench import (
        checkpoint,
        data,
        distributed,
        precision,
        quality,
        scale,
        train,
        uncertainty,
    )

    modules = [checkpoint, data, train, distributed, precision, scale, uncertainty, quality]
    return {module.__name__.removeprefix("bench."): module for module in modules}


def _print_table(name: str, result: dict) -> None:
    print(f"\n## {name}")
    for key, value in result.items():
        if key.endswith("_samples"):  # in the JSON file only
            continue
        rows = value.items() if isinstance(value, dict) else [("", value)]
        for inner, number in rows:
            shown = f"{number:10.4f}" if isinstance(number, float) else f"{number!s:>10}"
            print(f"  {key:<10} {inner:<45} {shown}")


def _parser(benchmarks: dict) -> argparse.ArgumentParser:
    """The shared options, then each benchmark's own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=[*benchmarks, "all"])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--train-patients", type=int, default=300, help="train: synthetic patients")
    parser.add_argument(
        "--result-name", default="", help="benchmarks/<this>.json (default: the benchmark's name)"
    )
    for name, module in benchmarks.items():
        module.add_arguments(parser.add_argument_group(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    benchmarks = _benchmarks()
    args = _parser(benchmarks).parse_args(argv)
    from bench.common import machine

    names = list(benchmarks) if args.benchmark == "all" else [args.benchmark]
    OUT_DIR.mkdir(exist_ok=True)
    for name in names:
        result = benchmarks[name].run(args)
        result["machine"] = machine()
        result["command"] = " ".join(["python", "scripts/benchmark.py", *(argv or sys.argv[1:])])
        saved_as = args.result_name if args.result_name and len(names) == 1 else name
        (OUT_DIR / f"{saved_as}.json").write_text(json.dumps(result, indent=2) + "\n")
        _print_table(name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweep summaries: one row per job of a multirun, as ``summary.csv``, ``summary.md`` and
``summary.png`` in the sweep folder.

Written at the end of every ``python -m retina.train -m ...`` (the ``SweepSummary`` Hydra
callback) and on demand: ``python -m retina.sweep <multirun_dir>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from retina.comparison import COMPARISON_FILE, comparison_markdown, paired_differences
from retina.files import read_json, write_atomically
from retina.markdown import markdown_table
from retina.run_dir import BEST_DIR, EVAL_DIR, METRICS_FILE, read_status, write_status

log = logging.getLogger(__name__)
SUMMARY_COLUMNS = ["job", "overrides", "status", "error", "best_checkpoint", "seconds"]
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")


def _best_validation(job: Path) -> tuple[dict, str]:
    from retina.checkpoint.files import complete_prefixes, read_sidecar
    from retina.checkpoint.read import find_checkpoint

    if not complete_prefixes(job / BEST_DIR):
        return {}, ""
    best = find_checkpoint(job, BEST_DIR)
    return read_sidecar(best)["metrics"], str(best)


def _test_metrics(job: Path) -> dict:
    """Eye-level test metrics of the newest evaluation of the job's best or latest."""
    found = sorted((job / EVAL_DIR).glob(f"*-test/{METRICS_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        return {}
    eye = read_json(found[-1]).get("eye_level", {})
    default = eye.get("operating_points", {}).get("default", {})
    return {
        "test_referable_auc": (eye.get("referable_auc") or {}).get("value"),
        "test_sensitivity": (default.get("sensitivity") or {}).get("value"),
        "test_specificity": (default.get("specificity") or {}).get("value"),
        "test_quadratic_weighted_kappa": eye.get("quadratic_weighted_kappa"),
    }


def job_folders(sweep_dir: str | Path) -> list[Path]:
    """The job folders of a sweep (those with ``.hydra/overrides.yaml``), sorted.

    Walked with ``os.walk``, which skips a folder that vanishes while it looks (TensorFlow's
    temporary checkpoint folders come and go while other jobs train), and not descending
    into a job folder once found."""
    found = []
    for folder, subfolders, _ in os.walk(sweep_dir):
        if (Path(folder) / ".hydra" / "overrides.yaml").is_file():
            found.append(Path(folder))
            subfolders.clear()
    return sorted(found)


def job_row(job: Path, sweep_dir: Path) -> dict:
    status = read_status(job)
    state = status.get("status", "incomplete")
    if state == "finished" and status.get("resumed"):
        state = "resumed"
    validation, best = _best_validation(job)
    # The job folder is named by the overrides that tell the jobs apart (no data paths).
    row = {
        "job": str(job.relative_to(sweep_dir)),
        "overrides": job.name.replace(",", " "),
        "status": state,
        "error": status.get("error", ""),
        "best_checkpoint": best,
        "seconds": status.get("seconds"),
    }
    row.update({f"val_{k}": v for k, v in validation.items()})
    row.update(_test_metrics(job))
    return row


def summarize(sweep_dir: str | Path, metric: str = "val_referable_auc", mode: str = "max"):
    """The summary table of every job under ``sweep_dir``, best ``metric`` first."""
    sweep_dir = Path(sweep_dir)
    table = pd.DataFrame([job_row(job, sweep_dir) for job in job_folders(sweep_dir)])
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    if metric in table:
        table = table.sort_values(metric, ascending=mode == "min", na_position="last")
    return table.reset_index(drop=True)


def write_summary(sweep_dir: str | Path, metric: str = "val_referable_auc", mode: str = "max"):
    """Writes summary.csv, summary.md and summary.png into ``sweep_dir``; returns the table."""
    sweep_dir = Path(sweep_dir)
    table = summarize(sweep_dir, metric, mode)
    # Parallel jobs (joblib) may write at the same moment: each file appears whole.
    csv_file, markdown_file, plot_file = (sweep_dir / name for name in SUMMARY_FILES)
    write_atomically(csv_file, lambda path: table.to_csv(path, index=False))
    write_atomically(markdown_file, _markdown(table, metric) + "\n")
    write_atomically(plot_file, lambda path: _plot(table, metric, path))
    log.info("Sweep summary (%d jobs, by %s) in %s", len(table), metric, markdown_file)
    write_comparison(sweep_dir, table)
    return table


def write_comparison(sweep_dir: Path, table: pd.DataFrame) -> None:
    """``paired.md``: every job evaluated on the same test scans as the best job, minus it."""
    if len(table) < 2:
        return
    jobs = {row.overrides or row.job: sweep_dir / row.job for row in table.itertuples()}
    reference = next(iter(jobs))
    differences = paired_differences(jobs, reference)
    if not differences.empty:
        write_atomically(
            sweep_dir / COMPARISON_FILE, comparison_markdown(differences, reference) + "\n"
        )


def _markdown(table: pd.DataFrame, metric: str) -> str:
    shown = [c for c in table.columns if c not in ("job", "best_checkpoint")]
    rows = [[row[c] for c in shown] for _, row in table.iterrows()]
    return f"# Sweep summary (sorted by {metric})\n\n" + markdown_table(shown, rows)


def _plot(table: pd.DataFrame, metric: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 0.5 + 0.4 * max(len(table), 1)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    column = table[metric] if metric in table else pd.Series([float("nan")] * len(table))
    values = pd.to_numeric(column, errors="coerce")
    labels = [o or j for o, j in zip(table.get("overrides", []), table.get("job", []), strict=True)]
    axes.barh(range(len(values)), values.fillna(0).to_numpy())
    axes.set_yticks(range(len(values)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel(metric)
    axes.set_title("Sweep jobs")
    figure.subplots_adjust(left=0.5, right=0.97)
    figure.savefig(path, format="png", metadata={"Software": None})


class SweepSummary(Callback):
    """Hydra callback: records each job's failure and writes the summary after a multirun."""

    def __init__(self, metric: str = "val_referable_auc", mode: str = "max"):
        self.metric, self.mode = metric, mode

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """Records a failure, then refreshes the summary: it stays current even when the
        sweep is killed or Hydra stops at the end on a failed job."""
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if job_return.status == JobStatus.FAILED:
            error = str(job_return._return_value).strip().splitlines() or [""]
            output_dir = Path(config.hydra.runtime.output_dir)
            name = type(job_return._return_value).__name__
            write_status(output_dir, status="failed", error=f"{name}: {error[0][:300]}")
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(config.hydra.sweep.dir, self.metric, self.mode)

    def on_multirun_end(self, config, **kwargs) -> None:
        write_summary(config.hydra.sweep.dir, self.metric, self.mode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarize a retina multirun folder.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="val_referable_auc")
    parser.add_argument("--mode", choices=["max", "min"], default="max")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"{args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    table = write_summary(args.sweep_dir, args.metric, args.mode)
    print(_markdown(table, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())

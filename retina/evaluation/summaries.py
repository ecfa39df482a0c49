"""Sweep summaries: one row per job of a multirun, as ``summary.csv``, ``summary.md`` and
``summary.png`` in the sweep folder, and one row per configuration (its seeds and folds
grouped: ``retina.evaluation.aggregation``) as ``summary_groups.csv`` and in both of the
others. ``retina.sweep`` writes them at the end of every ``python -m retina.train -m ...``
(its Hydra callback) and on demand (``python -m retina.sweep <multirun_dir>``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from retina.evaluation.aggregation import (
    REPEAT_KEYS,
    configuration,
    describe,
    group_jobs,
    groups_markdown,
    override_key,
)
from retina.evaluation.comparison import comparison_markdown, paired_differences
from retina.files import read_json, write_atomically
from retina.reports.tables import format_interval, markdown_table
from retina.run_dir import (
    BEST_DIR,
    COMPARISON_FILE,
    EVAL_DIR,
    GROUPS_FILE,
    HYDRA_OVERRIDES,
    HYDRA_SETTINGS,
    METRICS_FILE,
    SUMMARY_FILES,
    job_folders,
    read_status,
)

log = logging.getLogger(__name__)
SUMMARY_COLUMNS = [
    "job",
    "configuration",
    "overrides",
    "status",
    "error",
    "best_checkpoint",
    "seconds",
]


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


def job_overrides(job: Path) -> list[str]:
    """The overrides that name the job: Hydra's ``override_dirname.exclude_keys`` (data
    paths, worker counts) left out, as in its folder name."""
    overrides = yaml.safe_load((job / HYDRA_OVERRIDES).read_text()) or []
    hydra_file = job / HYDRA_SETTINGS
    hydra = yaml.safe_load(hydra_file.read_text())["hydra"] if hydra_file.exists() else {}
    naming = hydra.get("job", {}).get("config", {}).get("override_dirname", {})
    excluded = set(naming.get("exclude_keys", []))
    return [o for o in overrides if override_key(o) not in excluded]


def job_row(job: Path, sweep_dir: Path, repeat_keys=REPEAT_KEYS) -> dict:
    status = read_status(job)
    state = status.get("status", "incomplete")
    if state == "finished" and status.get("resumed"):
        state = "resumed"
    validation, best = _best_validation(job)
    # The job folder is named by the overrides that tell the jobs apart (no data paths).
    row = {
        "job": str(job.relative_to(sweep_dir)),
        "configuration": configuration(job_overrides(job), repeat_keys),
        "overrides": job.name.replace(",", " "),
        "status": state,
        "error": status.get("error", ""),
        "best_checkpoint": best,
        "seconds": status.get("seconds"),
    }
    row.update({f"val_{k}": v for k, v in validation.items()})
    row.update(_test_metrics(job))
    return row


def summarize(
    sweep_dir: str | Path,
    metric: str = "val_referable_auc",
    mode: str = "max",
    repeat_keys=REPEAT_KEYS,
):
    """The summary table of every job under ``sweep_dir``, best ``metric`` first."""
    sweep_dir = Path(sweep_dir)
    rows = [job_row(job, sweep_dir, repeat_keys) for job in job_folders(sweep_dir)]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    if metric in table:
        table = table.sort_values(metric, ascending=mode == "min", na_position="last")
    return table.reset_index(drop=True)


def write_summary(
    sweep_dir: str | Path,
    metric: str = "val_referable_auc",
    mode: str = "max",
    repeat_keys=REPEAT_KEYS,
    reference: str = "",
):
    """Writes summary.csv, summary_groups.csv, summary.md, summary.png and paired.md (see
    ``write_comparison``) into ``sweep_dir``; returns the per-job table."""
    sweep_dir = Path(sweep_dir)
    table = summarize(sweep_dir, metric, mode, repeat_keys)
    groups = group_jobs(table, metric, mode) if len(table) else pd.DataFrame()
    markdown = _markdown(table)
    if len(groups):
        markdown = f"{groups_markdown(groups, repeat_keys)}\n\n## Per job\n\n{markdown}"
    # Parallel jobs (joblib) may write at the same moment: each file appears whole.
    csv_file, markdown_file, plot_file = (sweep_dir / name for name in SUMMARY_FILES)
    write_atomically(csv_file, lambda path: table.to_csv(path, index=False))
    write_atomically(sweep_dir / GROUPS_FILE, lambda path: groups.to_csv(path, index=False))
    write_atomically(markdown_file, f"# Sweep summary (sorted by {metric})\n\n{markdown}\n")
    write_atomically(plot_file, lambda path: _plot(table, groups, metric, path))
    log.info("Sweep summary (%d jobs, by %s) in %s", len(table), metric, markdown_file)
    write_comparison(sweep_dir, table, reference)
    return table


def write_comparison(sweep_dir: Path, table: pd.DataFrame, reference: str = "") -> None:
    """``paired.md``: every job evaluated on the same test scans minus the best job, or with
    ``reference`` (``key=value``, e.g. ``model.head=softmax``) minus the job that differs
    from it in that key alone (the same seed and fold), with each configuration's mean."""
    if len(table) < 2:
        return
    jobs = {row.overrides or row.job: sweep_dir / row.job for row in table.itertuples()}
    if reference:
        pairs, described = reference_pairs(jobs, reference), f"its `{reference}` twin"
    else:
        best = next(iter(jobs))
        pairs = {name: (job, jobs[best]) for name, job in jobs.items() if name != best}
        described = f"`{best}`"
    differences = paired_differences(pairs)
    if differences.empty:
        return
    text = comparison_markdown(differences, described)
    configurations = dict(zip(table["overrides"], table["configuration"], strict=True))
    means = mean_differences(differences, configurations)
    if (means["jobs"] > 1).any():
        text += "\n\n" + mean_differences_markdown(means)
    write_atomically(sweep_dir / COMPARISON_FILE, text + "\n")


def reference_pairs(jobs: dict[str, Path], reference: str) -> dict[str, tuple[Path, Path]]:
    """name -> (job, the job whose overrides are its own with ``reference`` instead of its
    value of that key); jobs already at ``reference`` and jobs without a twin left out."""
    key = override_key(reference)
    by_overrides = {frozenset(job_overrides(job)): job for job in jobs.values()}
    pairs = {}
    for name, job in jobs.items():
        overrides = job_overrides(job)
        if reference in overrides:
            continue
        twin = frozenset([o for o in overrides if override_key(o) != key] + [reference])
        if twin in by_overrides:
            pairs[name] = (job, by_overrides[twin])
    return pairs


def mean_differences(differences: pd.DataFrame, configurations: dict) -> pd.DataFrame:
    """One row per configuration: its jobs' mean AUC and kappa differences with the
    t-interval over the jobs (``retina.evaluation.aggregation.describe``)."""
    rows = []
    named = differences.assign(configuration=differences["job"].map(configurations))
    for name, group in named.groupby("configuration", sort=False):
        row = {"configuration": name, "jobs": len(group)}
        for metric in ("auc", "kappa"):
            stats = describe(group[metric].map(lambda estimate: estimate[0]))
            row |= {f"{metric}_{k}": v for k, v in stats.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def mean_differences_markdown(means: pd.DataFrame) -> str:
    header = ["configuration", "jobs", "mean AUC difference", "mean kappa difference"]

    def shown(row, metric):
        low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
        return format_interval({"value": row[f"{metric}_mean"], "low": low, "high": high})

    rows = [
        [row["configuration"], row["jobs"], shown(row, "auc"), shown(row, "kappa")]
        for _, row in means.iterrows()
    ]
    return (
        "## Mean over each configuration's jobs\n\nThe mean of the jobs' differences, with "
        "its 95% t-interval over the jobs.\n\n" + markdown_table(header, rows)
    )


def _markdown(table: pd.DataFrame) -> str:
    shown = [c for c in table.columns if c not in ("job", "configuration", "best_checkpoint")]
    rows = [[row[c] for c in shown] for _, row in table.iterrows()]
    return markdown_table(shown, rows)


def _plot(table: pd.DataFrame, groups: pd.DataFrame, metric: str, path: Path) -> None:
    """Per configuration (mean and 95% t-interval) above, per job below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("Per configuration: mean, 95% t-interval", len(groups))] if len(groups) else []
    panels.append(("Per job", len(table)))
    heights = [0.6 + 0.3 * max(rows, 1) for _, rows in panels]
    figure = Figure(figsize=(7.5, 0.6 + sum(heights)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
    if len(groups):
        mean, error = groups.get(f"{metric}_mean"), None
        if mean is not None:
            low, high = groups[f"{metric}_ci_low"], groups[f"{metric}_ci_high"]
            error = np.nan_to_num(np.vstack([mean - low, high - mean]))
        _bars(axes[0], groups["configuration"], mean, error, panels[0][0])
    values = pd.to_numeric(table[metric], errors="coerce") if metric in table else None
    labels = [o or j for o, j in zip(table.get("overrides", []), table.get("job", []), strict=True)]
    _bars(axes[-1], labels, values, None, panels[-1][0])
    axes[-1].set_xlabel(metric)
    inch = 1 / figure.get_figheight()  # margins in inches, whatever the number of rows
    figure.subplots_adjust(
        left=0.45, right=0.97, hspace=0.5, bottom=0.55 * inch, top=1 - 0.3 * inch
    )
    figure.savefig(path, format="png", metadata={"Software": None})


def _bars(axes, labels, values, error, title: str) -> None:
    labels = list(labels)
    values = pd.Series([float("nan")] * len(labels)) if values is None else values
    axes.barh(range(len(labels)), values.fillna(0).to_numpy(), xerr=error, capsize=3)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_title(title, fontsize=9)

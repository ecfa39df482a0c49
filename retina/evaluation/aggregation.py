"""One answer per configuration: the jobs of a sweep that differ only in their repeat keys
(``seed``, ``data.fold``) grouped into n, mean, standard deviation and a 95% t-interval of
each metric, as ``summary_groups.csv`` beside the per-job summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from retina.reports.tables import format_number, markdown_table

REPEAT_KEYS = ("seed", "data.fold")  # what a configuration's repeats differ in, by default
CONFIDENCE = 0.95
STATISTICS = ("n", "mean", "std", "ci_low", "ci_high")


def override_key(override: str) -> str:
    """``data.fold`` of ``data.fold=2`` (also of ``+data.fold=2`` and ``++data.fold=2``)."""
    return override.split("=", 1)[0].lstrip("+~")


def configuration(overrides: list[str], repeat_keys) -> str:
    """The overrides that name a configuration: the job's, less its repeat keys."""
    kept = [o for o in overrides if override_key(o) not in set(repeat_keys)]
    return " ".join(sorted(kept)) or "(defaults)"


def metric_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(("val_", "test_"))]


def describe(values: pd.Series) -> dict:
    """n (values that are numbers), mean, sample standard deviation and the t-interval
    (n - 1 degrees of freedom) of one metric over a configuration's jobs."""
    numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float)
    n = len(numbers)
    if n == 0:
        return dict.fromkeys(STATISTICS, np.nan) | {"n": 0}
    mean = float(numbers.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    spread = stats.sem(numbers)  # scipy's interval is undefined at zero spread: [mean, mean]
    low, high = stats.t.interval(CONFIDENCE, n - 1, mean, spread) if spread else (mean, mean)
    return {"n": n, "mean": mean, "std": float(numbers.std(ddof=1)), "ci_low": low, "ci_high": high}


def group_jobs(table: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """One row per configuration (``table`` has a ``configuration`` column): ``jobs``, and
    ``<metric>_n``, ``_mean``, ``_std``, ``_ci_low``, ``_ci_high`` of every metric; the
    best ``metric`` mean first."""
    rows = []
    for name, jobs in table.groupby("configuration", sort=False):
        row = {"configuration": name, "jobs": len(jobs)}
        for column in metric_columns(table):
            row |= {f"{column}_{k}": v for k, v in describe(jobs[column]).items()}
        rows.append(row)
    groups = pd.DataFrame(rows)
    if f"{metric}_mean" in groups:
        groups = groups.sort_values(f"{metric}_mean", ascending=mode == "min", na_position="last")
    return groups.reset_index(drop=True)


def groups_markdown(groups: pd.DataFrame, repeat_keys) -> str:
    """The grouped table: per metric ``mean ± sd [95% t-interval] (n)``."""
    metrics = [c[: -len("_mean")] for c in groups.columns if c.endswith("_mean")]
    rows = [
        [row["configuration"], row["jobs"], *(_cell(row, m) for m in metrics)]
        for _, row in groups.iterrows()
    ]
    title = f"## Per configuration: mean ± sd [95% t-interval] (n) over {', '.join(repeat_keys)}"
    return f"{title}\n\n" + markdown_table(["configuration", "jobs", *metrics], rows)


def _cell(row, metric: str) -> str:
    n = int(row[f"{metric}_n"])
    if n == 0:
        return "n/a (0)"
    mean, std = format_number(row[f"{metric}_mean"]), format_number(row[f"{metric}_std"])
    low, high = format_number(row[f"{metric}_ci_low"]), format_number(row[f"{metric}_ci_high"])
    missing = row["jobs"] - n
    left_out = f", {missing} n/a left out" if missing else ""
    return f"{mean} ± {std} [{low}, {high}] ({n}{left_out})"

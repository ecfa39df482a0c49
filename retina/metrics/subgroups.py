"""Who the model works worse for: the referable decision's metrics per subgroup (site,
eye, sex, age band, image quality, ...), each with its own intervals and a flag where the
group is too small to judge."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.metrics.bootstrap import bootstrap_auc_interval
from retina.metrics.rates import is_referable, roc_auc
from retina.metrics.thresholds import operating_points
from retina.metrics.undefined import where

MIN_SCANS, MIN_REFERABLE = 30, 10  # below either: "too small to judge"
SUBGROUPS = ("site", "eye", "sex", "age_band", "image_quality")  # evaluate's default
AGE_BANDS = [0, 40, 50, 60, 70, 200]
AGE_LABELS = ["<40", "40-49", "50-59", "60-69", "70+"]


def subgroup_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Derived grouping columns: ``age_band`` from ``age``, ``image_quality`` from the
    cache's gradability flags."""
    derived = pd.DataFrame(index=table.index)
    if "age" in table:
        ages = pd.to_numeric(table["age"], errors="coerce")
        derived["age_band"] = pd.cut(ages, AGE_BANDS, right=False, labels=AGE_LABELS)
    if "gradability" in table:
        derived["image_quality"] = np.where(table["gradability"] == "", "gradable", "flagged")
    return derived


def subgroup_metrics(
    table: pd.DataFrame,
    columns: list[str],
    thresholds: dict[str, float],
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """``{column: {value: metrics}}`` for each of ``columns`` the table has (one row per
    scan with ``grade``, ``referable_probability`` and ``patient``): n, referable n and
    prevalence, the AUC with its patient-bootstrap interval, each operating point's
    sensitivity and specificity with Wilson intervals, and ``too_small``."""
    result = {}
    for column in (c for c in columns if c in table):
        result[column] = {}
        for value, rows in table.groupby(column, observed=True):
            with where(f"subgroup {column}={value}"):
                result[column][str(value)] = _group(rows, thresholds, n_resamples, seed)
    return result


def _group(rows: pd.DataFrame, thresholds: dict, n_resamples: int, seed: int) -> dict:
    positive = is_referable(rows["grade"].to_numpy())
    scores = rows["referable_probability"].to_numpy(float)
    n, referable = len(rows), int(positive.sum())
    one_class = referable in (0, n)
    low, high = (
        (np.nan, np.nan)
        if one_class
        else bootstrap_auc_interval(positive, scores, rows["patient"].to_numpy(), n_resamples, seed)
    )
    auc = np.nan if one_class else roc_auc(positive, scores)
    points = operating_points(positive, scores, thresholds)
    return {
        "n": n,
        "n_referable": referable,
        "prevalence": referable / n,
        "referable_auc": {"value": auc, "low": low, "high": high},
        "operating_points": {
            name: {"sensitivity": p["sensitivity"], "specificity": p["specificity"]}
            for name, p in points.items()
        },
        "too_small": n < MIN_SCANS or referable < MIN_REFERABLE,
    }

"""Evaluation under shift: another data set scored beside the run's own test split.

RETINA's "country shift" trains on one population and tests on another; it resamples the
shifted set with replacement to the in-domain grade mix (``rebalance=true``) so that the
comparison is not a comparison of case mixes.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from retina.icdr import NUM_GRADES
from retina.markdown import format_count, format_interval, format_number, markdown_table

log = logging.getLogger(__name__)


def rebalanced(rows: pd.DataFrame, reference_grades: pd.Series, seed: int) -> pd.DataFrame:
    """``rows`` resampled with replacement to the grade mix of ``reference_grades``, as
    many rows as before; a grade the rows lack is left out (and said)."""
    share = np.bincount(reference_grades, minlength=NUM_GRADES) / len(reference_grades)
    rng = np.random.default_rng(seed)
    parts = []
    for grade, wanted in enumerate(np.round(share * len(rows)).astype(int)):
        pool = rows[rows["grade"] == grade]
        if wanted and pool.empty:
            log.warning("rebalance: no scan of grade %d to draw %d from; left out.", grade, wanted)
        elif wanted:
            parts.append(pool.iloc[rng.integers(0, len(pool), wanted)])
    log.info("Rebalanced %d scans to the in-domain grade mix %s.", len(rows), np.round(share, 3))
    return pd.concat(parts, ignore_index=True)


def summary(metrics: dict) -> dict:
    """The figures compared across data sets."""
    eye, referral = metrics["eye_level"], metrics["referral"]
    default = eye["operating_points"]["default"]
    return {
        "dataset": metrics["dataset"],
        "scans": eye["n"],
        "referable_auc": eye["referable_auc"],
        "sensitivity": default["sensitivity"],
        "specificity": default["specificity"],
        "quadratic_weighted_kappa": eye["quadratic_weighted_kappa"],
        "retention_area_auc": referral["area"]["plain"]["referable_auc"],
        "retention_area_minus_random": referral["area_minus_random"]["referable_auc"],
        "referral": referral,
    }


def comparison_section(in_domain: dict, shifted: dict) -> str:
    """Markdown: in-domain and shifted figures side by side."""
    rows = []
    for key, label in (
        ("scans", "eyes scored"),
        ("referable_auc", "referable AUC"),
        ("sensitivity", "sensitivity (default point)"),
        ("specificity", "specificity (default point)"),
        ("quadratic_weighted_kappa", "quadratic weighted kappa"),
        ("retention_area_auc", "AUC retention curve, area (kept 0.5-1.0)"),
        ("retention_area_minus_random", "area minus random referral"),
    ):
        rows.append([label, _cell(in_domain[key]), _cell(shifted[key])])
    header = ["", f"in-domain: {in_domain['dataset']}", f"shifted: {shifted['dataset']}"]
    return "## In-domain and shifted\n\n" + markdown_table(header, rows)


def _cell(value) -> str:
    if isinstance(value, dict):
        return format_interval(value)
    return format_count(value) if isinstance(value, int) else format_number(value)

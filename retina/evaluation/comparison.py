"""Paired comparison of sweep jobs on the same held-out scans.

Two configurations scored on the same test scans differ by less than their separate
confidence intervals suggest: most of each interval is the sampling of the scans, which
both share. Resampling the same patients for both (a paired bootstrap) leaves the part of
the variation that is theirs alone, so the interval of the difference can exclude 0 where
the two separate intervals overlap.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from retina.metrics.bootstrap import paired_auc_difference, paired_kappa_difference
from retina.metrics.rates import is_referable
from retina.reports.tables import format_interval, markdown_table
from retina.run_dir import EVAL_DIR, PREDICTIONS_FILE


def test_predictions(job: Path) -> pd.DataFrame | None:
    """The newest held-out test ``predictions.csv`` of a job, or None."""
    found = sorted(
        (job / EVAL_DIR).glob(f"*-test/{PREDICTIONS_FILE}"), key=lambda p: p.stat().st_mtime
    )
    return pd.read_csv(found[-1]).sort_values("scan_id").reset_index(drop=True) if found else None


def paired_differences(
    pairs: dict[str, tuple[Path, Path]], n_resamples: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """For each name, its job's test referable AUC and quadratic kappa minus its reference
    job's (``pairs``: name -> (job, reference job)), with 95% paired patient-bootstrap
    intervals; pairs scored on different scans (or not evaluated) are left out."""
    rows = []
    for name, (job, reference) in pairs.items():
        base, other = test_predictions(reference), test_predictions(job)
        if base is None or other is None or not other["scan_id"].equals(base["scan_id"]):
            continue  # not evaluated, or a different test split: not paired
        patients = base["patient"].to_numpy()
        auc = paired_auc_difference(
            is_referable(base["grade"]),
            other["referable_probability"].to_numpy(),
            base["referable_probability"].to_numpy(),
            patients,
            n_resamples,
            seed,
        )
        kappa = paired_kappa_difference(
            base["grade"],
            other["predicted_grade"],
            base["predicted_grade"],
            patients,
            n_resamples,
            seed,
        )
        rows.append(
            {
                "job": name,
                "reference": reference.name,
                "scans": len(base),
                "auc": auc,
                "kappa": kappa,
            }
        )
    return pd.DataFrame(rows, columns=["job", "reference", "scans", "auc", "kappa"])


def comparison_markdown(differences: pd.DataFrame, reference: str) -> str:
    """``paired.md``: each job minus ``reference`` (a job, or the configuration each job is
    paired with), then, where several jobs repeat one configuration, their mean."""
    header = ["job", "test scans", "AUC difference [95% CI]", "kappa difference [95% CI]"]
    rows = [
        [row.job, row.scans, _shown(row.auc), _shown(row.kappa)] for row in differences.itertuples()
    ]
    return (
        f"# Paired differences on the same test scans\n\nEach job minus {reference} "
        "(test referable AUC and quadratic weighted kappa), with 95% intervals from 2,000 "
        "patient resamples shared by both jobs; an interval that excludes 0 is a difference "
        "the test scans support.\n\n" + markdown_table(header, rows)
    )


def _shown(estimate) -> str:
    value, low, high = estimate
    return format_interval({"value": value, "low": low, "high": high})

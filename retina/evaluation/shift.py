"""Evaluation under shift: another data set scored beside the run's own test split (the
comparison's figures and section: ``retina.reports.shift_comparison``).

RETINA's "country shift" trains on one population and tests on another; it resamples the
shifted set with replacement to the in-domain grade mix (``rebalance=true``) so that the
comparison is not a comparison of case mixes.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from retina.icdr import NUM_GRADES

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

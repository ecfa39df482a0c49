"""Cut-points of a grade call fitted to maximise quadratic weighted kappa: the recipe of the
top APTOS 2019 and EyePACS 2015 solutions (regress the grade, then move the four cut-points
between grades on held-out scans), here for any score that rises with the grade (a
regressed grade, an ordinal head's expected grade).

A scan's grade is the number of cut-points its score exceeds. The fit starts at the fixed
cut-points (0.5, 1.5, 2.5, 3.5) and searches with Nelder-Mead (scipy), as those solutions'
``OptimizedRounder`` did; kappa is a step function of the cut-points, so the search keeps the
best point it visits and never returns one worse than where it started.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from retina.icdr import GRADE_BOUNDARIES, grades_at
from retina.metrics.rates import quadratic_weighted_kappa
from retina.metrics.undefined import gathered


def kappa_at(scores: np.ndarray, grades: np.ndarray, cut_points) -> float:
    """Quadratic weighted kappa of the grade call at ``cut_points`` (nan where undefined)."""
    with gathered():  # an undefined kappa is a bad candidate here, not a warning
        return quadratic_weighted_kappa(grades, grades_at(scores, cut_points))


def fit_cut_points(
    scores: np.ndarray, grades: np.ndarray, start=GRADE_BOUNDARIES
) -> tuple[float, ...]:
    """The four increasing cut-points with the highest kappa on these scans, searched from
    ``start``; ``start`` itself where nothing beats it (or kappa is undefined)."""
    scores, grades = np.asarray(scores, float).ravel(), np.asarray(grades, int).ravel()
    best = {"kappa": kappa_at(scores, grades, start), "cut_points": tuple(start)}
    if np.isnan(best["kappa"]):
        return tuple(float(c) for c in start)

    def negative_kappa(cut_points: np.ndarray) -> float:
        kappa = kappa_at(scores, grades, cut_points)
        if kappa > best["kappa"]:
            best.update(kappa=kappa, cut_points=tuple(np.sort(cut_points)))
        return 1.0 if np.isnan(kappa) else -kappa

    minimize(negative_kappa, np.asarray(start, float), method="Nelder-Mead")
    return tuple(float(c) for c in best["cut_points"])

"""Calibration of referable probabilities: reliability-diagram points, the ECE, and
Platt scaling (the recalibration referral ranks by)."""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from retina.metrics.rates import check_paired
from retina.metrics.undefined import undefined

_PROBABILITY_SLACK = 1e-6
PLATT_CLIP = 1e-6  # scores are clipped to [PLATT_CLIP, 1 - PLATT_CLIP] before the log-odds


def calibration_curve_points(
    positive: np.ndarray, scores: np.ndarray, bins: int = 10
) -> list[dict]:
    """Reliability-diagram points over equal-width bins of [0, 1].

    Bins are [lower, upper), the last one closed so a score of exactly 1 is counted.

    Args:
        positive: truth per scan.
        scores: predicted probability per scan, within [0, 1].
        bins: number of equal-width bins.

    Returns:
        One dict per non-empty bin: lower, upper, mean_score, fraction_positive, count;
        an empty list with a RuntimeWarning when there are no scans.
    """
    positive, scores = check_paired(positive, scores)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}.")
    # Summed float32 softmax columns can land a rounding error above 1; only more is an error.
    if ((scores < -_PROBABILITY_SLACK) | (scores > 1 + _PROBABILITY_SLACK)).any():
        raise ValueError("calibration needs probabilities; some scores lie outside [0, 1].")
    scores = np.clip(scores, 0.0, 1.0)
    if len(scores) == 0:
        undefined("calibration curve", "no scans")
        return []
    edges = np.linspace(0.0, 1.0, bins + 1)
    # searchsorted on the same edges that are reported keeps bin membership and labels in step.
    which = np.minimum(np.searchsorted(edges, scores, side="right") - 1, bins - 1)
    points = []
    for index in np.unique(which):
        members = which == index
        points.append(
            {
                "lower": float(edges[index]),
                "upper": float(edges[index + 1]),
                "mean_score": float(scores[members].mean()),
                "fraction_positive": float(positive[members].mean()),
                "count": int(members.sum()),
            }
        )
    return points


def expected_calibration_error(positive: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean of |fraction positive - mean score| over equal-width bins of [0, 1].

    Returns:
        The ECE in [0, 1]; nan with a RuntimeWarning when there are no scans.
    """
    if len(np.asarray(scores).ravel()) == 0:
        return undefined("expected calibration error", "no scans")
    points = calibration_curve_points(positive, scores, bins)
    total = sum(point["count"] for point in points)
    return float(
        sum(p["count"] * abs(p["fraction_positive"] - p["mean_score"]) for p in points) / total
    )


def fit_platt(positive: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Platt scaling (Platt 1999): an unpenalised logistic regression of the truth on the
    score's log-odds. The calibrated probability is sigmoid(slope * logit(score) +
    intercept); a monotone map, so it changes no AUC or ranking by score.

    Raises:
        ValueError: when the scans are all of one class (nothing to fit).
    """
    positive, scores = check_paired(positive, scores)
    slope, intercept = fit_logistic(positive, _log_odds(scores))
    return {"slope": slope, "intercept": intercept}


def fit_logistic(positive: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of an unpenalised logistic regression of the truth on ``values``:
    P(positive) = sigmoid(slope * value + intercept).

    Raises:
        ValueError: when the scans are all of one class (nothing to fit).
    """
    positive, values = check_paired(positive, values)
    if positive.all() or not positive.any():
        raise ValueError("a logistic fit needs both referable and non-referable scans.")
    model = LogisticRegression(C=np.inf).fit(values[:, None], positive)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def apply_platt(scores: np.ndarray, platt: dict[str, float]) -> np.ndarray:
    """The calibrated probabilities of ``scores`` (any shape) under ``fit_platt``'s fit."""
    return expit(platt["slope"] * _log_odds(scores) + platt["intercept"])


def _log_odds(scores: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(scores, float), PLATT_CLIP, 1 - PLATT_CLIP))

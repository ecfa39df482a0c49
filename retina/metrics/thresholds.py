"""Referral thresholds and what happens at them: the operating points of a screening model.

A scan is referred when score >= threshold.
"""

from __future__ import annotations

import numpy as np

from retina.metrics.intervals import check_confidence, rate_with_interval
from retina.metrics.rates import check_paired, npv, ppv, sensitivity, specificity
from retina.metrics.undefined import undefined, where


def _above_every(scores) -> float:
    """The next representable value above the highest score, in the scores' own precision.

    In float64, nextafter(max) of float32 scores rounds back to max when the threshold is
    stored or compared as float32 (NumPy compares a float32 array with a Python float in
    float32), and would then refer the top scan after all.
    """
    scores = np.asarray(scores)
    dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.dtype(np.float64)
    highest = scores.max().astype(dtype)
    return float(np.nextafter(highest, dtype.type(np.inf)))


def _check_target(target: float) -> None:
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must lie in [0, 1], got {target}.")


def threshold_for_sensitivity(positive: np.ndarray, scores: np.ndarray, target: float) -> float:
    """Highest threshold (a score value) whose sensitivity is at least ``target``.

    A scan is referred when score >= threshold. The highest such threshold refers the
    fewest scans, so it has the best specificity among thresholds meeting the target.

    Args:
        positive: truth per scan.
        scores: referable score per scan.
        target: required sensitivity in [0, 1]; 0 gives a threshold just above every score.

    Returns:
        The threshold; nan with a RuntimeWarning when there is no positive scan.
    """
    raw_scores, (positive, scores) = scores, check_paired(positive, scores)
    _check_target(target)
    if not positive.any():
        return undefined("threshold for sensitivity", "no positive case")
    ranked = np.sort(scores[positive])[::-1]
    # Compare the same float ratio that sensitivity() computes, not ceil(target * n), which
    # float error can push one case too high (0.9 * 10 == 9.000000000000002).
    enough = np.arange(len(ranked) + 1) / len(ranked) >= target
    needed = int(np.argmax(enough))
    if needed == 0:
        return _above_every(raw_scores)
    return float(ranked[needed - 1])


def threshold_for_specificity(positive: np.ndarray, scores: np.ndarray, target: float) -> float:
    """Lowest threshold (a score value) whose specificity is at least ``target``.

    A scan is referred when score >= threshold. The lowest such threshold refers the most
    scans, so it has the best sensitivity among thresholds meeting the target. When only a
    threshold above every score will do, it is ``nextafter(max(scores), inf)`` in the
    scores' own precision (float32 scores give a float32 step).

    Args:
        positive: truth per scan.
        scores: referable score per scan.
        target: required specificity in [0, 1]; 0 gives the lowest score.

    Returns:
        The threshold; nan with a RuntimeWarning when there is no negative scan.
    """
    raw_scores, (positive, scores) = scores, check_paired(positive, scores)
    _check_target(target)
    if positive.all():
        return undefined("threshold for specificity", "no negative case")
    ranked = np.sort(scores[~positive])
    enough = np.arange(len(ranked) + 1) / len(ranked) >= target
    needed = int(np.argmax(enough))
    if needed == 0:
        return float(scores.min())
    # The threshold must exceed the needed-th lowest negative score; the lowest score value
    # that does so is the next distinct score above it.
    above = scores[scores > ranked[needed - 1]]
    return float(above.min()) if len(above) else _above_every(raw_scores)


def operating_point(
    positive: np.ndarray, scores: np.ndarray, threshold: float, confidence: float = 0.95
) -> dict:
    """Confusion counts and rates, with Wilson intervals, at one threshold.

    A scan is referred when score >= threshold.

    Args:
        positive: truth per scan.
        scores: referable score per scan.
        threshold: referral threshold, for example from threshold_for_sensitivity.
        confidence: coverage of the Wilson intervals.

    Returns:
        {"threshold", "tp", "fp", "tn", "fn", "sensitivity", "specificity", "ppv", "npv"},
        each rate as {"value", "low", "high"}. An undefined rate is nan with a RuntimeWarning;
        a nan threshold (say, from a validation set with one class) gives None counts and nan
        rates, because ``score >= nan`` would silently refer nobody.
    """
    positive, scores = check_paired(positive, scores)
    check_confidence(confidence)
    threshold = float(threshold)
    if np.isnan(threshold):
        undefined("operating point", "the threshold is nan")
        nan_rate = {"value": float("nan"), "low": float("nan"), "high": float("nan")}
        names = ("sensitivity", "specificity", "ppv", "npv")
        counts = dict.fromkeys(("tp", "fp", "tn", "fn"))
        return {"threshold": threshold, **counts, **{name: dict(nan_rate) for name in names}}
    referred = scores >= threshold
    tp, fp = int((referred & positive).sum()), int((referred & ~positive).sum())
    tn, fn = int((~referred & ~positive).sum()), int((~referred & positive).sum())
    return {
        "threshold": threshold,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": rate_with_interval(sensitivity(positive, referred), tp, tp + fn, confidence),
        "specificity": rate_with_interval(specificity(positive, referred), tn, tn + fp, confidence),
        "ppv": rate_with_interval(ppv(positive, referred), tp, tp + fp, confidence),
        "npv": rate_with_interval(npv(positive, referred), tn, tn + fn, confidence),
    }


def operating_points(
    positive: np.ndarray, scores: np.ndarray, thresholds: dict[str, float], confidence: float = 0.95
) -> dict[str, dict]:
    """``operating_point`` at each of the named ``thresholds``."""
    points = {}
    for name, threshold in thresholds.items():
        with where(f"operating point {name}"):
            points[name] = operating_point(positive, scores, threshold, confidence)
    return points


def choose_operating_points(
    positive: np.ndarray,
    scores: np.ndarray,
    referable_threshold: float,
    target_sensitivity: float,
    target_specificity: float,
) -> dict[str, float]:
    """The referral thresholds a screening model ships with, chosen on validation scores:
    the configured default, the highest reaching ``target_sensitivity`` and the lowest
    reaching ``target_specificity`` (keys as in ``retina.config.OperatingPoint``)."""
    return {
        "default": referable_threshold,
        "high_sensitivity": threshold_for_sensitivity(positive, scores, target_sensitivity),
        "high_specificity": threshold_for_specificity(positive, scores, target_specificity),
    }

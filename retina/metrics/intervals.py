"""Confidence intervals of proportions (sensitivity, specificity, PPV, NPV)."""

from __future__ import annotations

from scipy.stats import binomtest

from retina.metrics.undefined import undefined


def check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}.")


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion such as sensitivity.

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps close
    to its nominal coverage at the small counts and extreme proportions of clinical tables.
    Computed by scipy (``binomtest(...).proportion_ci(method="wilson")``).

    Args:
        successes: number of successes, 0 <= successes <= total.
        total: number of trials.
        confidence: two-sided coverage, strictly between 0 and 1.

    Returns:
        (low, high); (nan, nan) with a RuntimeWarning when total is 0.
    """
    if not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}.")
    check_confidence(confidence)  # reject a bad confidence even when there are no trials
    if total == 0:  # scipy raises here; an empty cell of a clinical table is not an error
        undefined("Wilson interval", "no trials")
        return float("nan"), float("nan")
    bounds = binomtest(successes, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(bounds.low), float(bounds.high)


def rate_with_interval(value: float, successes: int, total: int, confidence: float) -> dict:
    """``{"value", "low", "high"}`` for a rate whose own undefinedness was already reported
    (no second warning for its interval)."""
    if total == 0:
        return {"value": value, "low": float("nan"), "high": float("nan")}
    low, high = wilson_interval(successes, total, confidence)
    return {"value": value, "low": low, "high": high}

"""Referral (retention) curves: refer the most uncertain scans, score the rest.

Definitions follow Google's RETINA benchmark (Band et al. 2021) and its predecessor
(Filos et al. 2019):

- Scans are sorted by uncertainty, least first. At kept fraction f, the floor(N f) least
  uncertain scans are kept and the rest referred to a specialist. Ties in uncertainty keep
  the scans in their given order (a stable sort).
- *Plain* curve: referable AUC, sensitivity, specificity and accuracy of the referral
  decision (score >= threshold) on the kept scans only.
- *Oracle* curve: the referred scans are counted as correctly handled (the specialist is
  right): accuracy is (correct kept + referred) / N, sensitivity and specificity count the
  referred positives and negatives as caught and cleared, and the AUC ranks referred
  positives above and referred negatives below every kept scan. It is never below the
  plain curve.
- *Random* baseline: referral in a random order (the mean over 20 orders for the point
  estimate, a fresh order per bootstrap resample for its interval): flat in expectation,
  so a curve above it shows the uncertainty ranks errors first.
- *Area*: the mean of a curve over kept fractions 0.50, 0.55, ..., 1.00 (the trapezoid
  rule, divided by the 0.5 width), on the metric's own scale.

Intervals are percentile bootstraps over patients (both eyes in or out together); in a
resample a patient drawn k times counts k times, and the kept fraction counts copies.
"""

from __future__ import annotations

import numpy as np

from retina.metrics.bootstrap import (
    cluster_copies,
    percentile_interval,
    resample_chunks,
    weighted_aucs,
)
from retina.metrics.intervals import check_confidence
from retina.metrics.rates import check_paired

TABLE_FRACTIONS = np.round(np.arange(0.5, 1.0001, 0.1), 2)
AREA_FRACTIONS = np.round(np.arange(0.5, 1.0001, 0.05), 2)
CURVE_FRACTIONS = np.round(np.arange(0.02, 1.0001, 0.02), 2)  # the full curve, for plots
METRICS = ("referable_auc", "sensitivity", "specificity", "accuracy")
RANDOM_ORDERS = 20
_ORACLE_SCORE = np.array([-1.0, 2.0])  # outside every probability: referred scans ranked right


def kept_copies(weights: np.ndarray, orders: np.ndarray, fraction: float) -> np.ndarray:
    """Per row of scan ``weights`` (copies), the copies kept: the first floor(W f) of the
    row's total W, taking scans in that row's ``orders`` (least uncertain first)."""
    ordered = np.take_along_axis(weights, orders, axis=1)
    cumulative = np.cumsum(ordered, axis=1)
    limit = np.floor(cumulative[:, -1:] * fraction + 1e-9)
    kept = np.empty_like(weights)
    np.put_along_axis(kept, orders, np.clip(limit - (cumulative - ordered), 0, ordered), axis=1)
    return kept


def curve_values(positive, scores, referred_flag, weights, orders, fractions) -> dict:
    """``{variant: {metric: (rows, fractions)}}`` for variants ``plain`` and ``oracle``."""
    correct = referred_flag == positive
    both = np.r_[scores, _ORACLE_SCORE[positive.astype(int)]]
    out = {
        v: {m: np.empty((len(weights), len(fractions))) for m in METRICS}
        for v in ("plain", "oracle")
    }
    for column, fraction in enumerate(fractions):
        kept = kept_copies(weights, orders, fraction)
        referred = weights - kept
        plain, oracle = out["plain"], out["oracle"]
        plain["referable_auc"][:, column] = weighted_aucs(positive, scores, kept)
        oracle["referable_auc"][:, column] = weighted_aucs(
            np.r_[positive, positive], both, np.hstack([kept, referred])
        )
        for metric, cases, right in (
            ("sensitivity", positive, referred_flag),
            ("specificity", ~positive, ~referred_flag),
            ("accuracy", np.ones_like(positive), correct),
        ):
            hits = (kept * (cases & right)).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                plain[metric][:, column] = hits / (kept * cases).sum(axis=1)
                oracle[metric][:, column] = (hits + (referred * cases).sum(axis=1)) / (
                    weights * cases
                ).sum(axis=1)
    return out


def area(values: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """The mean of each row's curve over ``fractions`` (trapezoid rule / width)."""
    return np.trapezoid(values, fractions, axis=-1) / (fractions[-1] - fractions[0])


def retention_curves(
    positive,
    scores,
    uncertainty,
    patients,
    threshold: float,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Plain, oracle and random-referral curves with patient-bootstrap intervals.

    Returns a JSON-ready dict: ``fractions`` (the table's kept fractions), ``table``
    (variant -> metric -> one ``{"value", "low", "high"}`` per fraction), ``area``
    (variant -> metric -> estimate), ``area_minus_random`` (metric -> the paired
    difference of the plain curve's area and the random baseline's, same resamples) and
    ``curve`` (point estimates over ``CURVE_FRACTIONS``, for plots).
    """
    positive, scores = check_paired(positive, scores)
    uncertainty = np.asarray(uncertainty, float).ravel()
    check_confidence(confidence)
    referred_flag = scores >= threshold
    n = len(scores)
    rng = np.random.default_rng(seed)
    by_uncertainty = np.argsort(uncertainty, kind="stable")[None, :]
    ones = np.ones((1, n), np.int64)

    def values(weights, orders, fractions):
        return curve_values(positive, scores, referred_flag, weights, orders, fractions)

    random_orders = rng.random((RANDOM_ORDERS, n)).argsort(axis=1)
    point = _with_random(
        values(ones, by_uncertainty, AREA_FRACTIONS),
        values(np.repeat(ones, RANDOM_ORDERS, 0), random_orders, AREA_FRACTIONS),
    )
    resampled = _resampled_curves(values, patients, n, n_resamples, rng, by_uncertainty)
    table_columns = np.flatnonzero(np.isin(AREA_FRACTIONS, TABLE_FRACTIONS))
    point_area = {v: {m: area(point[v][m], AREA_FRACTIONS) for m in METRICS} for v in point}
    boot_area = {v: {m: area(resampled[v][m], AREA_FRACTIONS) for m in METRICS} for v in point}
    table = {
        v: {
            m: [_estimate(point[v][m][c], resampled[v][m][:, c], confidence) for c in table_columns]
            for m in METRICS
        }
        for v in point
    }
    areas = {
        v: {m: _estimate(point_area[v][m], boot_area[v][m], confidence) for m in METRICS}
        for v in point
    }
    differences = {
        m: _estimate(
            point_area["plain"][m] - point_area["random"][m],
            boot_area["plain"][m] - boot_area["random"][m],  # the same resamples: paired
            confidence,
        )
        for m in METRICS
    }
    full = values(ones, by_uncertainty, CURVE_FRACTIONS)
    return {
        "definition": "kept = the floor(N f) least uncertain scans; see retina.metrics.retention",
        "fractions": TABLE_FRACTIONS.tolist(),
        "table": table,
        "area": areas,
        "area_minus_random": differences,
        "curve": {
            "fractions": CURVE_FRACTIONS.tolist(),
            **{v: {m: _listed(full[v][m][0]) for m in METRICS} for v in full},
        },
    }


def _with_random(by_uncertainty: dict, by_random: dict) -> dict:
    """The point curves: plain and oracle (one row), and random (the mean of its orders)."""
    rows = {v: {m: by_uncertainty[v][m][0] for m in METRICS} for v in by_uncertainty}
    rows["random"] = {m: np.nanmean(by_random["plain"][m], axis=0) for m in METRICS}
    return rows


def _resampled_curves(values, patients, n, n_resamples, rng, by_uncertainty) -> dict:
    """Each variant's curves under the same patient resamples: (resamples, fractions)."""
    _, cluster_of_scan = np.unique(np.asarray(patients).ravel(), return_inverse=True)
    n_clusters = int(cluster_of_scan.max()) + 1
    parts = []
    for _, rows in resample_chunks(n_resamples, 2 * n):
        weights = cluster_copies(rng, rows, n_clusters)[:, cluster_of_scan]
        orders = np.broadcast_to(by_uncertainty, weights.shape)
        random = rng.random(weights.shape).argsort(axis=1)
        parts.append(
            _with_rows(
                values(weights, orders, AREA_FRACTIONS), values(weights, random, AREA_FRACTIONS)
            )
        )
    return {v: {m: np.vstack([p[v][m] for p in parts]) for m in METRICS} for v in parts[0]}


def _with_rows(by_uncertainty: dict, by_random: dict) -> dict:
    return {**by_uncertainty, "random": by_random["plain"]}


def _estimate(value: float, resampled: np.ndarray, confidence: float) -> dict:
    finite = resampled[np.isfinite(resampled)]
    low, high = percentile_interval(finite, confidence) if len(finite) else (np.nan, np.nan)
    return {"value": _number(value), "low": _number(low), "high": _number(high)}


def _number(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def _listed(values: np.ndarray) -> list:
    return [_number(v) for v in values]

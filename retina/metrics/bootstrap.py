"""Percentile bootstrap intervals of the ROC AUC that resample patients, not eyes."""

from __future__ import annotations

import numpy as np

from retina.metrics.intervals import check_confidence
from retina.metrics.rates import check_paired, quadratic_weighted_kappa, roc_auc
from retina.metrics.undefined import undefined

# Bootstrap weight matrices are built this many elements at a time, so memory stays near
# 100 MB whatever the number of scans or resamples.
_BOOTSTRAP_CHUNK_ELEMENTS = 2**21


def bootstrap_aucs(
    positive: np.ndarray, scores: np.ndarray, clusters: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """ROC AUC of each cluster resample; nan where a resample holds a single class.

    A resample is a vector of copy counts per cluster, so each scan gets the weight of its
    cluster (``weighted_aucs``).
    """
    _, cluster_of_scan = np.unique(clusters, return_inverse=True)
    n_clusters = int(cluster_of_scan.max()) + 1
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_resamples)
    for begin, rows in resample_chunks(n_resamples, max(len(scores), n_clusters)):
        # Generator streams do not depend on how draws are split, so the chunk size cannot
        # change the result for a seed.
        weights = cluster_copies(rng, rows, n_clusters)[:, cluster_of_scan]
        aucs[begin : begin + rows] = weighted_aucs(positive, scores, weights)
    return aucs


def resample_chunks(n_resamples: int, columns: int):
    """(first row, rows) of chunks of resamples whose weight matrices stay near 100 MB."""
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(columns, 1))
    for begin in range(0, n_resamples, chunk):
        yield begin, min(chunk, n_resamples - begin)


def weighted_aucs(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of integer scan ``weights`` (rows x scans): the weighted
    Mann-Whitney statistic, ties one half; nan where a row weighs a single class.

    Scores are sorted once; the statistic is then a cumulative sum over tie groups, which
    costs O(rows x scans) with no per-row Python loop.
    """
    order = np.argsort(scores, kind="stable")
    scores, positive, weights = scores[order], positive[order], weights[:, order]
    tie_starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    # Integer arithmetic keeps the statistic exact (and ties exactly one half).
    pos = np.add.reduceat(weights * positive, tie_starts, axis=1)
    neg = np.add.reduceat(weights * ~positive, tie_starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    twice_wins = (pos * (2 * neg_below + neg)).sum(axis=1)
    twice_pairs = 2 * pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(twice_pairs > 0, twice_wins / twice_pairs, np.nan)


def bootstrap_auc_interval(
    positive: np.ndarray,
    scores: np.ndarray,
    clusters: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC, resampling whole clusters.

    Clusters are patients: both eyes of a patient go in or out of a resample together,
    because two eyes of one person are not independent and resampling eyes would give an
    interval that is too narrow. Resamples that hold a single class are skipped.

    Args:
        positive: truth per scan (referable or not).
        scores: referable score per scan.
        clusters: cluster (patient) id per scan, any hashable sortable type.
        n_resamples: number of bootstrap resamples.
        seed: seed of the numpy Generator; the same seed gives the same interval.
        confidence: two-sided coverage, strictly between 0 and 1.

    Returns:
        (low, high); (nan, nan) with a RuntimeWarning when the data hold a single class or
        no resample holds both.
    """
    positive, scores = check_paired(positive, scores)
    clusters = np.asarray(clusters).ravel()
    if len(clusters) != len(scores):
        raise ValueError(f"{len(clusters)} cluster ids but {len(scores)} scores.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}.")
    check_confidence(confidence)  # validate before the expensive part
    if positive.all() or not positive.any():
        undefined("AUC bootstrap interval", "only one class is present")
        return float("nan"), float("nan")
    aucs = bootstrap_aucs(positive, scores, clusters, n_resamples, seed)
    aucs = aucs[~np.isnan(aucs)]
    if len(aucs) == 0:
        undefined("AUC bootstrap interval", "every resample held a single class")
        return float("nan"), float("nan")
    return percentile_interval(aucs, confidence)


def cluster_copies(rng: np.random.Generator, resamples: int, n_clusters: int) -> np.ndarray:
    """How many times each cluster is drawn in each resample: (resamples, n_clusters)."""
    drawn = rng.integers(0, n_clusters, size=(resamples, n_clusters))
    drawn += n_clusters * np.arange(resamples)[:, None]
    copies = np.bincount(drawn.ravel(), minlength=resamples * n_clusters)
    return copies.reshape(resamples, n_clusters)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


def paired_auc_difference(
    positive: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    clusters: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) on the same scans, with a percentile interval from patient resamples
    shared by both (the same resample for a and b: the pairing removes the variation the two
    have in common, which is why it detects differences two separate intervals miss).

    Returns:
        (difference, low, high).
    """
    positive, scores_a = check_paired(positive, scores_a)
    _, scores_b = check_paired(positive, scores_b)
    check_confidence(confidence)
    clusters = np.asarray(clusters).ravel()
    # The same seed draws the same copies per patient for both: bootstrap_aucs numbers the
    # patients by their sorted ids, whatever the scores.
    differences = bootstrap_aucs(positive, scores_a, clusters, n_resamples, seed) - bootstrap_aucs(
        positive, scores_b, clusters, n_resamples, seed
    )
    point = roc_auc(positive, scores_a) - roc_auc(positive, scores_b)
    return paired_difference(point, differences, confidence, "AUC")


def paired_kappa_difference(
    grades: np.ndarray,
    predicted_a: np.ndarray,
    predicted_b: np.ndarray,
    clusters: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Quadratic weighted kappa(a) - kappa(b) against the same grades, with a percentile
    interval from patient resamples shared by both; returns (difference, low, high)."""
    check_confidence(confidence)
    grades, predicted_a, predicted_b = (
        np.asarray(v, int).ravel() for v in (grades, predicted_a, predicted_b)
    )
    _, cluster_of_scan = np.unique(np.asarray(clusters).ravel(), return_inverse=True)
    n_clusters = int(cluster_of_scan.max()) + 1
    rng = np.random.default_rng(seed)
    weights = cluster_copies(rng, n_resamples, n_clusters)[:, cluster_of_scan]
    differences = weighted_kappas(grades, predicted_a, weights) - weighted_kappas(
        grades, predicted_b, weights
    )
    point = quadratic_weighted_kappa(grades, predicted_a) - quadratic_weighted_kappa(
        grades, predicted_b
    )
    return paired_difference(point, differences, confidence, "kappa")


def paired_difference(
    point: float, differences: np.ndarray, confidence: float, statistic: str
) -> tuple[float, float, float]:
    """(point, low, high): the percentile interval of the resampled differences where the
    statistic is defined for both; a nan interval, with the reason, where it is in none."""
    differences = differences[~np.isnan(differences)]
    if len(differences) == 0:
        undefined(f"paired {statistic} difference interval", "undefined in every resample")
        return float(point), float("nan"), float("nan")
    return (float(point), *percentile_interval(differences, confidence))


def weighted_kappas(grades: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa under each row of scan ``weights`` (resamples x scans): the
    statistic ``cohen_kappa_score(weights="quadratic", sample_weight=row)`` computes, for all
    rows at once from one weighted confusion matrix each."""
    classes = int(max(grades.max(), predicted.max())) + 1
    pair = np.zeros((len(grades), classes * classes))
    pair[np.arange(len(grades)), grades * classes + predicted] = 1
    observed = (weights @ pair).reshape(-1, classes, classes)
    total = observed.sum(axis=(1, 2))[:, None, None]
    expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :] / total
    distance = (np.arange(classes)[:, None] - np.arange(classes)[None, :]) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (distance * observed).sum(axis=(1, 2)) / (distance * expected).sum(axis=(1, 2))

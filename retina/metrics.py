"""Clinical metrics on numpy arrays, named the way DR papers name them.

Referable DR is ICDR grade >= 2 (moderate NPDR or worse) unless told otherwise. Where a
metric is undefined (one class only, or no data), it returns ``nan`` with a RuntimeWarning,
never raises. Throughout, a scan (or patient) is *referred when score >= threshold*.
"""

from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np
import pandas as pd
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

REFERABLE_MIN_GRADE = 2
NUM_GRADES = 5


def _undefined(name: str, why: str) -> float:
    warnings.warn(f"{name} is undefined: {why}; reporting nan.", RuntimeWarning, stacklevel=3)
    return float("nan")


def referable_probability(
    probabilities: np.ndarray, min_grade: int = REFERABLE_MIN_GRADE
) -> np.ndarray:
    """P(grade >= min_grade) from per-grade probabilities of shape (N, 5), or the second
    column of a referable head's (N, 2) output (not referable, referable)."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[1] == 2:
        return probabilities[:, 1]
    return probabilities[:, min_grade:].sum(axis=1)


def is_referable(grades: np.ndarray, min_grade: int = REFERABLE_MIN_GRADE) -> np.ndarray:
    return np.asarray(grades) >= min_grade


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return _undefined("AUC", "only one class is present")
    return float(roc_auc_score(positive, scores))


def sensitivity(positive: np.ndarray, predicted: np.ndarray) -> float:
    """True-positive rate: referable eyes that were referred."""
    positive, predicted = np.asarray(positive, bool), np.asarray(predicted, bool)
    if not positive.any():
        return _undefined("sensitivity", "no positive case")
    return float((predicted & positive).sum() / positive.sum())


def specificity(positive: np.ndarray, predicted: np.ndarray) -> float:
    """True-negative rate: non-referable eyes that were not referred."""
    positive, predicted = np.asarray(positive, bool), np.asarray(predicted, bool)
    if positive.all():
        return _undefined("specificity", "no negative case")
    return float((~predicted & ~positive).sum() / (~positive).sum())


def quadratic_weighted_kappa(grades: np.ndarray, predicted_grades: np.ndarray) -> float:
    grades, predicted_grades = np.asarray(grades), np.asarray(predicted_grades)
    if len(np.unique(np.concatenate([grades, predicted_grades]))) < 2:
        return _undefined("quadratic weighted kappa", "a single grade in truth and prediction")
    return float(
        cohen_kappa_score(
            grades, predicted_grades, weights="quadratic", labels=list(range(NUM_GRADES))
        )
    )


def clinical_metrics(
    grades: np.ndarray,
    probabilities: np.ndarray,
    threshold: float = 0.5,
    min_grade: int = REFERABLE_MIN_GRADE,
) -> dict:
    """The summary reported after validation and evaluation.

    Args:
        grades: true ICDR grades, shape (N,).
        probabilities: predicted per-grade probabilities, shape (N, 5); or, from a referable
            head, (N, 2), whose accuracy and confusion matrix are then binary and whose
            kappa is nan.
        threshold: referable probability at or above which a scan is referred.
        min_grade: lowest referable grade.
    """
    grades = np.asarray(grades)
    score = referable_probability(probabilities, min_grade)
    positive, referred = is_referable(grades, min_grade), score >= threshold
    predicted = np.asarray(probabilities).argmax(axis=1)
    if np.asarray(probabilities).shape[1] == 2:  # a referable head predicts no grade
        truth, classes, kappa = positive.astype(int), [0, 1], float("nan")
    else:
        truth, classes = grades, list(range(NUM_GRADES))
        kappa = quadratic_weighted_kappa(grades, predicted)
    return {
        "n_scans": int(len(grades)),
        "referable_auc": roc_auc(positive, score),
        "sensitivity": sensitivity(positive, referred),
        "specificity": specificity(positive, referred),
        "quadratic_weighted_kappa": kappa,
        "accuracy": float(np.mean(predicted == truth)) if len(grades) else float("nan"),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=classes).tolist(),
        "threshold": float(threshold),
        "referable_min_grade": int(min_grade),
    }


# --- Confidence intervals -------------------------------------------------------------------

# Bootstrap weight matrices are built this many elements at a time, so memory stays near
# 100 MB whatever the number of scans or resamples.
_BOOTSTRAP_CHUNK_ELEMENTS = 2**21


def _z_score(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}.")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _wilson(successes: int, total: int, confidence: float) -> tuple[float, float]:
    """Wilson bounds without the warning, for callers that already warned about the value."""
    z = _z_score(confidence)
    if total == 0:
        return float("nan"), float("nan")
    proportion, z2 = successes / total, z * z
    centre = (proportion + z2 / (2 * total)) / (1 + z2 / total)
    spread = (
        z / (1 + z2 / total) * np.sqrt(proportion * (1 - proportion) / total + z2 / (4 * total**2))
    )
    # Clipping only removes float noise: the exact bounds always lie in [0, 1].
    return float(max(0.0, centre - spread)), float(min(1.0, centre + spread))


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion such as sensitivity.

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps close
    to its nominal coverage at the small counts and extreme proportions of clinical tables.

    Args:
        successes: number of successes, 0 <= successes <= total.
        total: number of trials.
        confidence: two-sided coverage, strictly between 0 and 1.

    Returns:
        (low, high); (nan, nan) with a RuntimeWarning when total is 0.
    """
    if not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}.")
    _z_score(confidence)  # reject a bad confidence even when there are no trials
    if total == 0:
        _undefined("Wilson interval", "no trials")
        return float("nan"), float("nan")
    return _wilson(successes, total, confidence)


def _check_paired(positive, scores) -> tuple[np.ndarray, np.ndarray]:
    positive, scores = np.asarray(positive, bool).ravel(), np.asarray(scores, float).ravel()
    if len(positive) != len(scores):
        raise ValueError(f"{len(positive)} labels but {len(scores)} scores; pass one per scan.")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain nan or inf; drop or repair those scans first.")
    return positive, scores


def _bootstrap_aucs(
    positive: np.ndarray, scores: np.ndarray, clusters: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """ROC AUC of each cluster resample; nan where a resample holds a single class.

    A resample is a vector of copy counts per cluster, so each scan gets the weight of its
    cluster and the AUC is the weighted Mann-Whitney statistic (ties count one half). Scores
    are sorted once; the weighted statistic is then a cumulative sum over tie groups, which
    costs O(resamples x scans) with no per-resample Python loop.
    """
    order = np.argsort(scores, kind="stable")
    scores, positive = scores[order], positive[order]
    _, cluster_of_scan = np.unique(clusters[order], return_inverse=True)
    n_clusters = int(cluster_of_scan.max()) + 1
    tie_starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_resamples)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(len(scores), n_clusters))
    for begin in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - begin)
        # Generator streams do not depend on how draws are split, so the chunk size cannot
        # change the result for a seed.
        drawn = rng.integers(0, n_clusters, size=(rows, n_clusters))
        drawn += n_clusters * np.arange(rows)[:, None]
        copies = np.bincount(drawn.ravel(), minlength=rows * n_clusters)
        weights = copies.reshape(rows, n_clusters)[:, cluster_of_scan]
        # Integer arithmetic keeps the statistic exact (and ties exactly one half).
        pos = np.add.reduceat(weights * positive, tie_starts, axis=1)
        neg = np.add.reduceat(weights * ~positive, tie_starts, axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        twice_wins = (pos * (2 * neg_below + neg)).sum(axis=1)
        twice_pairs = 2 * pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs[begin : begin + rows] = np.where(twice_pairs > 0, twice_wins / twice_pairs, np.nan)
    return aucs


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
    positive, scores = _check_paired(positive, scores)
    clusters = np.asarray(clusters).ravel()
    if len(clusters) != len(scores):
        raise ValueError(f"{len(clusters)} cluster ids but {len(scores)} scores.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}.")
    _z_score(confidence)  # validate before the expensive part
    if positive.all() or not positive.any():
        _undefined("AUC bootstrap interval", "only one class is present")
        return float("nan"), float("nan")
    aucs = _bootstrap_aucs(positive, scores, clusters, n_resamples, seed)
    aucs = aucs[~np.isnan(aucs)]
    if len(aucs) == 0:
        _undefined("AUC bootstrap interval", "every resample held a single class")
        return float("nan"), float("nan")
    low, high = np.percentile(aucs, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high)


# --- Predictive values ----------------------------------------------------------------------


def ppv(positive: np.ndarray, predicted: np.ndarray) -> float:
    """Positive predictive value (precision): referred eyes that were referable."""
    positive, predicted = np.asarray(positive, bool), np.asarray(predicted, bool)
    if not predicted.any():
        return _undefined("PPV", "nothing was referred")
    return float((predicted & positive).sum() / predicted.sum())


def npv(positive: np.ndarray, predicted: np.ndarray) -> float:
    """Negative predictive value: eyes not referred that were not referable."""
    positive, predicted = np.asarray(positive, bool), np.asarray(predicted, bool)
    if predicted.all():
        return _undefined("NPV", "everything was referred")
    return float((~predicted & ~positive).sum() / (~predicted).sum())


# --- Calibration ----------------------------------------------------------------------------


_PROBABILITY_SLACK = 1e-6


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
    positive, scores = _check_paired(positive, scores)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}.")
    # Summed float32 softmax columns can land a rounding error above 1; only more is an error.
    if ((scores < -_PROBABILITY_SLACK) | (scores > 1 + _PROBABILITY_SLACK)).any():
        raise ValueError("calibration needs probabilities; some scores lie outside [0, 1].")
    scores = np.clip(scores, 0.0, 1.0)
    if len(scores) == 0:
        _undefined("calibration curve", "no scans")
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
        return _undefined("expected calibration error", "no scans")
    points = calibration_curve_points(positive, scores, bins)
    total = sum(point["count"] for point in points)
    return float(
        sum(p["count"] * abs(p["fraction_positive"] - p["mean_score"]) for p in points) / total
    )


# --- Operating points -----------------------------------------------------------------------


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
    raw_scores, (positive, scores) = scores, _check_paired(positive, scores)
    _check_target(target)
    if not positive.any():
        return _undefined("threshold for sensitivity", "no positive case")
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
    raw_scores, (positive, scores) = scores, _check_paired(positive, scores)
    _check_target(target)
    if positive.all():
        return _undefined("threshold for specificity", "no negative case")
    ranked = np.sort(scores[~positive])
    enough = np.arange(len(ranked) + 1) / len(ranked) >= target
    needed = int(np.argmax(enough))
    if needed == 0:
        return float(scores.min())
    # The threshold must exceed the needed-th lowest negative score; the lowest score value
    # that does so is the next distinct score above it.
    above = scores[scores > ranked[needed - 1]]
    return float(above.min()) if len(above) else _above_every(raw_scores)


def _rate(value: float, successes: int, total: int, confidence: float) -> dict:
    low, high = _wilson(successes, total, confidence)
    return {"value": value, "low": low, "high": high}


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
    positive, scores = _check_paired(positive, scores)
    _z_score(confidence)
    threshold = float(threshold)
    if np.isnan(threshold):
        _undefined("operating point", "the threshold is nan")
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
        "sensitivity": _rate(sensitivity(positive, referred), tp, tp + fn, confidence),
        "specificity": _rate(specificity(positive, referred), tn, tn + fp, confidence),
        "ppv": _rate(ppv(positive, referred), tp, tp + fp, confidence),
        "npv": _rate(npv(positive, referred), tn, tn + fn, confidence),
    }


# --- Grades and patients --------------------------------------------------------------------


def per_grade(
    grades: np.ndarray, predicted_grades: np.ndarray, num_grades: int = NUM_GRADES
) -> dict[str, dict]:
    """Precision, recall and support of each grade.

    Returns:
        {"0": {"precision", "recall", "support"}, ...}; precision is nan for a grade never
        predicted and recall nan for a grade never present, each with a RuntimeWarning.
    """
    grades, predicted_grades = np.asarray(grades).ravel(), np.asarray(predicted_grades).ravel()
    if len(grades) != len(predicted_grades):
        raise ValueError(f"{len(grades)} grades but {len(predicted_grades)} predictions.")
    labels = list(range(num_grades))
    if len(grades) == 0:  # scikit-learn raises on empty input
        precision = recall = np.full(num_grades, np.nan)
        support = np.zeros(num_grades, int)
    else:
        precision, recall, _, support = precision_recall_fscore_support(
            grades, predicted_grades, labels=labels, zero_division=np.nan
        )
    # zero_division=nan is silent; the house rule is that every nan comes with a warning.
    for name, values, why in (
        ("precision", precision, "never predicted"),
        ("recall", recall, "never present"),
    ):
        undefined_grades = np.flatnonzero(np.isnan(values)).tolist()
        if undefined_grades:
            _undefined(f"{name} of grades {undefined_grades}", why)
    return {
        str(grade): {
            "precision": float(precision[grade]),
            "recall": float(recall[grade]),
            "support": int(support[grade]),
        }
        for grade in labels
    }


PATIENT_COLUMNS = ("patient", "eye", "grade", "predicted_grade", "referable_probability")


def patient_level(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per patient from one row per scan.

    A patient is referable if either eye is, and is referred if either eye is, so the grade,
    the predicted grade and the referable probability are each the maximum over the
    patient's scans. Thresholds on the referable probability therefore carry over.

    Args:
        frame: columns patient, eye, grade, predicted_grade, referable_probability.

    Returns:
        Columns patient, n_scans, grade, predicted_grade, referable_probability, sorted by
        patient.
    """
    missing = [column for column in PATIENT_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"patient_level needs columns {missing}; it got {list(frame.columns)}.")
    grouped = frame.groupby("patient", sort=True)
    patients = grouped[["grade", "predicted_grade", "referable_probability"]].max()
    patients.insert(0, "n_scans", grouped.size())
    return patients.reset_index()


# --- The evaluation table -------------------------------------------------------------------


def evaluation_metrics(
    grades: np.ndarray,
    predicted_grades: np.ndarray,
    scores: np.ndarray,
    clusters: np.ndarray,
    thresholds: dict[str, float],
    min_grade: int = REFERABLE_MIN_GRADE,
    n_resamples: int = 2000,
    seed: int = 0,
    binary_head: bool = False,
    confidence: float = 0.95,
) -> dict:
    """Every reported metric for one level of analysis (eyes or patients).

    A scan is referred when score >= threshold.

    Args:
        grades: true ICDR grade per row.
        predicted_grades: predicted grade per row; with ``binary_head``, 0 (not referable)
            or 1 (referable).
        scores: referable probability per row.
        clusters: patient id per row, the unit of the AUC bootstrap (at patient level, the
            patient itself).
        thresholds: named referral thresholds, for example {"sensitivity_90": 0.31}.
        min_grade: lowest referable grade.
        n_resamples: bootstrap resamples for the AUC interval.
        seed: bootstrap seed.
        binary_head: the model predicts referable or not, not a grade: accuracy and the
            confusion matrix are then over referable truth (2 x 2), kappa is nan and
            per_grade is left out.
        confidence: coverage of every interval.

    Returns:
        {"n", "n_referable", "n_clusters", "referable_min_grade", "referable_auc" {"value",
        "low", "high"}, "operating_points" {name: operating_point(...)},
        "expected_calibration_error", "accuracy", "quadratic_weighted_kappa",
        "confusion_matrix", "per_grade"}; plain Python numbers, nan where undefined.
    """
    grades, predicted_grades = np.asarray(grades).ravel(), np.asarray(predicted_grades).ravel()
    positive, scores = _check_paired(is_referable(grades, min_grade), scores)
    low, high = bootstrap_auc_interval(positive, scores, clusters, n_resamples, seed, confidence)
    if binary_head:
        truth, classes, kappa = positive.astype(int), [0, 1], float("nan")
    else:
        truth, classes = grades, list(range(NUM_GRADES))
        kappa = quadratic_weighted_kappa(grades, predicted_grades)
    result = {
        "n": int(len(grades)),
        "n_referable": int(positive.sum()),
        "n_clusters": int(len(np.unique(np.asarray(clusters)))),
        "referable_min_grade": int(min_grade),
        "referable_auc": {"value": roc_auc(positive, scores), "low": low, "high": high},
        "operating_points": {
            name: operating_point(positive, scores, threshold, confidence)
            for name, threshold in thresholds.items()
        },
        "expected_calibration_error": expected_calibration_error(positive, scores),
        "accuracy": _accuracy(truth, predicted_grades),
        "quadratic_weighted_kappa": kappa,
        "confusion_matrix": _confusion(truth, predicted_grades, classes),
    }
    if not binary_head:
        result["per_grade"] = per_grade(grades, predicted_grades)
    return result


def _accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    if len(truth) == 0:
        return _undefined("accuracy", "no scans")
    return float(np.mean(truth == predicted))


def _confusion(truth: np.ndarray, predicted: np.ndarray, classes: list[int]) -> list[list[int]]:
    if len(truth) == 0:  # scikit-learn raises on empty input
        return [[0] * len(classes) for _ in classes]
    return confusion_matrix(truth, predicted, labels=classes).tolist()

"""Rates of one decision on numpy arrays, named the clinical way, and the checks they share.

Throughout, a scan (or patient) is *referred when score >= threshold*. Where a rate is
undefined (no positive case, nothing referred, no data) it is ``nan`` with a
RuntimeWarning, never an exception.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from retina.icdr import NUM_GRADES, REFERABLE_MIN_GRADE
from retina.metrics.undefined import undefined


def check_paired(positive, scores) -> tuple[np.ndarray, np.ndarray]:
    """Truth and scores as flat arrays of equal length, the scores finite."""
    positive, scores = np.asarray(positive, bool).ravel(), np.asarray(scores, float).ravel()
    if len(positive) != len(scores):
        raise ValueError(f"{len(positive)} labels but {len(scores)} scores; pass one per scan.")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain nan or inf; drop or repair those scans first.")
    return positive, scores


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
        return undefined("AUC", "only one class is present")
    return float(roc_auc_score(positive, scores))


def sensitivity(positive: np.ndarray, predicted: np.ndarray) -> float:
    """True-positive rate: referable eyes that were referred."""
    positive, predicted = np.asarray(positive, bool), np.asarray(predicted, bool)
    if not positive.any():
        return undefined("sensitivity", "no positive case")
    return float((predicted & positive).sum() / positive.sum())


def specificity(positive: np.ndarray, predicted: np.ndarray) -> float:
    """True-negative rate: non-referable eyes that were not referred."""
    positive, predicted = np.asarray(positive, bool), np.asarray(predicted, bool)
    if positive.all():
        return undefined("specificity", "no negative case")
    return float((~predicted & ~positive).sum() / (~positive).sum())


def ppv(positive: np.ndarray, predicted: np.ndarray) -> float:
    """Positive predictive value (precision): referred eyes that were referable."""
    positive, predicted = np.asarray(positive, bool), np.asarray(predicted, bool)
    if not predicted.any():
        return undefined("PPV", "nothing was referred")
    return float((predicted & positive).sum() / predicted.sum())


def npv(positive: np.ndarray, predicted: np.ndarray) -> float:
    """Negative predictive value: eyes not referred that were not referable."""
    positive, predicted = np.asarray(positive, bool), np.asarray(predicted, bool)
    if predicted.all():
        return undefined("NPV", "everything was referred")
    return float((~predicted & ~positive).sum() / (~predicted).sum())


def quadratic_weighted_kappa(grades: np.ndarray, predicted_grades: np.ndarray) -> float:
    grades, predicted_grades = np.asarray(grades), np.asarray(predicted_grades)
    if len(np.unique(np.concatenate([grades, predicted_grades]))) < 2:
        return undefined("quadratic weighted kappa", "a single grade in truth and prediction")
    return float(
        cohen_kappa_score(
            grades, predicted_grades, weights="quadratic", labels=list(range(NUM_GRADES))
        )
    )


def accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    if len(truth) == 0:
        return undefined("accuracy", "no scans")
    return float(np.mean(np.asarray(truth) == np.asarray(predicted)))

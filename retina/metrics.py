"""Clinical metrics on numpy arrays, named the way DR papers name them.

Referable DR is ICDR grade >= 2 (moderate NPDR or worse) unless told otherwise. Where a
metric is undefined (one class only), it returns ``nan`` with a warning, never raises.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

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

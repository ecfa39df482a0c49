"""The metric tables reported after every epoch (``clinical_metrics``) and by an evaluation
(``evaluation_metrics``), built from the same helpers, plus the per-grade and per-patient
views. Degenerate input (one class, no scans) gives nan with a RuntimeWarning, never raises.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from retina.icdr import NUM_GRADES, REFERABLE_MIN_GRADE
from retina.metrics.bootstrap import bootstrap_auc_interval
from retina.metrics.calibration import expected_calibration_error
from retina.metrics.rates import (
    accuracy,
    check_paired,
    is_referable,
    quadratic_weighted_kappa,
    referable_probability,
    roc_auc,
    sensitivity,
    specificity,
)
from retina.metrics.thresholds import operating_points
from retina.metrics.undefined import undefined


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: list[int]) -> list[list[int]]:
    """Rows true, columns predicted; all zeros for no scans (scikit-learn raises there)."""
    if len(truth) == 0:
        return [[0] * len(classes) for _ in classes]
    return confusion_matrix(truth, predicted, labels=classes).tolist()


def grading_metrics(
    grades: np.ndarray,
    predicted: np.ndarray,
    binary_head: bool = False,
    min_grade: int = REFERABLE_MIN_GRADE,
) -> dict:
    """Accuracy, quadratic weighted kappa and confusion matrix of predicted grades.

    With ``binary_head`` the model predicts referable (1) or not (0), not a grade: accuracy
    and the confusion matrix are then over referable truth (2 x 2) and kappa is nan.
    """
    grades, predicted = np.asarray(grades).ravel(), np.asarray(predicted).ravel()
    if binary_head:
        truth, classes, kappa = is_referable(grades, min_grade).astype(int), [0, 1], float("nan")
    else:
        truth, classes = grades, list(range(NUM_GRADES))
        kappa = quadratic_weighted_kappa(grades, predicted)
    return {
        "accuracy": accuracy(truth, predicted),
        "quadratic_weighted_kappa": kappa,
        "confusion_matrix": confusion(truth, predicted, classes),
    }


def selection_metrics(truth: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray):
    """RETFound's model-selection metrics (its ``engine_finetune.evaluate``): macro F1,
    macro one-vs-rest AUROC, unweighted Cohen's kappa, and ``retfound_score``, their mean.

    The macro AUROC averages the classes present in ``truth`` (RETFound's scikit-learn call
    fails when a validation split lacks one; a class absent there has no AUROC).
    """
    truth, predicted = np.asarray(truth).ravel(), np.asarray(predicted).ravel()
    present = [c for c in range(probabilities.shape[1]) if 0 < (truth == c).sum() < len(truth)]
    if present:
        macro_auc = float(np.mean([roc_auc(truth == c, probabilities[:, c]) for c in present]))
    else:
        macro_auc = undefined("macro AUROC", "only one class is present")
    if len(np.union1d(truth, predicted)) < 2:
        kappa = undefined("Cohen's kappa", "truth and prediction are one and the same class")
    else:
        kappa = float(cohen_kappa_score(truth, predicted))
    macro_f1 = float(f1_score(truth, predicted, average="macro", zero_division=0))
    return {
        "macro_f1": macro_f1,
        "macro_auc": macro_auc,
        "cohen_kappa": kappa,
        "retfound_score": (macro_f1 + macro_auc + kappa) / 3,
    }


def clinical_metrics(
    grades: np.ndarray,
    probabilities: np.ndarray,
    threshold: float = 0.5,
    min_grade: int = REFERABLE_MIN_GRADE,
    predicted: np.ndarray | None = None,
) -> dict:
    """The summary reported after every validation.

    Args:
        grades: true ICDR grades, shape (N,).
        probabilities: predicted per-grade probabilities, shape (N, 5); or, from a referable
            head, (N, 2), whose accuracy and confusion matrix are then binary and whose
            kappa is nan.
        threshold: referable probability at or above which a scan is referred.
        min_grade: lowest referable grade.
        predicted: the grade call per scan (an ordinal head's cut-points); default the most
            probable grade.
    """
    grades, probabilities = np.asarray(grades), np.asarray(probabilities)
    score = referable_probability(probabilities, min_grade)
    positive, referred = is_referable(grades, min_grade), score >= threshold
    binary_head = probabilities.shape[1] == 2
    predicted = probabilities.argmax(axis=1) if predicted is None else predicted
    return {
        "n_scans": int(len(grades)),
        "referable_auc": roc_auc(positive, score),
        "sensitivity": sensitivity(positive, referred),
        "specificity": specificity(positive, referred),
        **grading_metrics(grades, predicted, binary_head, min_grade),
        **selection_metrics(
            positive.astype(int) if binary_head else grades, probabilities, predicted
        ),
        "threshold": float(threshold),
        "referable_min_grade": int(min_grade),
    }


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
            undefined(f"{name} of grades {undefined_grades}", why)
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
    positive, scores = check_paired(is_referable(grades, min_grade), scores)
    low, high = bootstrap_auc_interval(positive, scores, clusters, n_resamples, seed, confidence)
    result = {
        "n": int(len(grades)),
        "n_referable": int(positive.sum()),
        "n_clusters": int(len(np.unique(np.asarray(clusters)))),
        "referable_min_grade": int(min_grade),
        "referable_auc": {"value": roc_auc(positive, scores), "low": low, "high": high},
        "operating_points": operating_points(positive, scores, thresholds, confidence),
        "expected_calibration_error": expected_calibration_error(positive, scores),
        **grading_metrics(grades, predicted_grades, binary_head, min_grade),
    }
    if not binary_head:
        result["per_grade"] = per_grade(grades, predicted_grades)
    return result

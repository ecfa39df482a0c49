import warnings

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from retina import metrics


@pytest.mark.parametrize(
    "positive, predicted, sensitivity, specificity",
    [
        ([1, 1, 0, 0], [1, 0, 0, 1], 0.5, 0.5),
        ([1, 1, 1, 0], [1, 1, 1, 0], 1.0, 1.0),
        ([1, 0, 0, 0, 0], [0, 1, 0, 0, 0], 0.0, 0.75),
        ([1, 1, 1, 0, 0], [1, 1, 0, 1, 1], 2 / 3, 0.0),
    ],
)
def test_sensitivity_specificity_by_hand(positive, predicted, sensitivity, specificity):
    assert metrics.sensitivity(positive, predicted) == pytest.approx(sensitivity)
    assert metrics.specificity(positive, predicted) == pytest.approx(specificity)


def test_auc_by_hand():
    # Pairs (pos, neg): (0.9,0.1) (0.9,0.6) (0.4,0.1) (0.4,0.6) -> 3 of 4 ordered right.
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.1, 0.6]) == pytest.approx(0.75)


def test_kappa_by_hand():
    # Perfect agreement is 1; swapping extremes is strongly negative.
    assert metrics.quadratic_weighted_kappa([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]) == 1.0
    assert metrics.quadratic_weighted_kappa([0, 0, 4, 4], [4, 4, 0, 0]) == pytest.approx(-1.0)


def test_referable_probability_sums_grades_two_and_up():
    probabilities = np.array([[0.5, 0.2, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(metrics.referable_probability(probabilities), [0.3, 1.0])
    np.testing.assert_allclose(metrics.referable_probability(probabilities, 4), [0.1, 1.0])


def test_agrees_with_scikit_learn_on_random_data():
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 5, 300)
    probabilities = rng.dirichlet(np.ones(5), 300)
    result = metrics.clinical_metrics(grades, probabilities, threshold=0.6)
    score = probabilities[:, 2:].sum(1)
    assert result["referable_auc"] == pytest.approx(roc_auc_score(grades >= 2, score))
    expected_kappa = cohen_kappa_score(grades, probabilities.argmax(1), weights="quadratic")
    assert result["quadratic_weighted_kappa"] == pytest.approx(expected_kappa)
    referred = score >= 0.6
    assert result["sensitivity"] == pytest.approx(referred[grades >= 2].mean())
    assert result["specificity"] == pytest.approx((~referred)[grades < 2].mean())
    assert np.sum(result["confusion_matrix"]) == 300


def test_degenerate_labels_give_nan_with_warning():
    grades = np.zeros(6, int)  # no referable case
    probabilities = np.tile([0.9, 0.05, 0.05, 0.0, 0.0], (6, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = metrics.clinical_metrics(grades, probabilities)
    assert np.isnan(result["referable_auc"])
    assert np.isnan(result["sensitivity"])
    assert result["specificity"] == 1.0
    assert np.isnan(result["quadratic_weighted_kappa"])
    assert len(caught) == 3 and all("undefined" in str(w.message) for w in caught)


def test_referable_head_outputs_score_the_second_column():
    grades = np.array([0, 1, 2, 4])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    result = metrics.clinical_metrics(grades, probabilities)
    assert result["referable_auc"] == 1.0
    assert result["sensitivity"] == 1.0 and result["specificity"] == 1.0
    assert result["accuracy"] == 1.0 and result["confusion_matrix"] == [[2, 0], [0, 2]]
    assert np.isnan(result["quadratic_weighted_kappa"])

"""Grading heads: CORAL and CORN losses and probabilities against direct numpy computations,
CORAL's rank consistency, the kappa-fitted cut-points, and the regression link."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import expit

from retina.config import LossConfig
from retina.errors import ConfigError
from retina.icdr import GRADE_BOUNDARIES
from retina.metrics.cut_points import fit_cut_points, kappa_at
from retina.models.grading import Grading, expected_grades
from retina.models.heads import CoralLogits
from retina.training.losses import make_loss

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0, 2, size=(32, 4)).astype(np.float32)
GRADES = RNG.integers(0, 5, size=32).astype(np.int32)


def _numpy_coral_loss(logits, grades):
    above = grades[:, None] > np.arange(4)[None, :]
    log_p, log_q = np.log(expit(logits)), np.log(1 - expit(logits))
    return float(np.mean(-np.sum(np.where(above, log_p, log_q), axis=1)))


def _numpy_corn_loss(logits, grades):
    """coral_pytorch's corn_loss, written out."""
    total, examples = 0.0, 0
    for task in range(4):
        chosen = grades > task - 1
        labels = grades[chosen] > task
        p = expit(logits[chosen, task])
        total -= np.sum(np.where(labels, np.log(p), np.log(1 - p)))
        examples += int(chosen.sum())
    return total / examples


@pytest.mark.parametrize(
    "head, reference", [("coral", _numpy_coral_loss), ("corn", _numpy_corn_loss)]
)
def test_ordinal_losses_match_numpy(head, reference):
    loss = make_loss(LossConfig(), head, 4, GRADES)
    assert float(loss(tf.constant(GRADES), tf.constant(LOGITS))) == pytest.approx(
        reference(LOGITS, GRADES), rel=1e-5
    )


def test_regression_loss_is_the_mean_squared_error():
    outputs = RNG.normal(2, 1, size=(32, 1)).astype(np.float32)
    loss = make_loss(LossConfig(), "regression", 1, GRADES)
    expected = np.mean((outputs[:, 0] - GRADES) ** 2)
    assert float(loss(tf.constant(GRADES), tf.constant(outputs))) == pytest.approx(expected, 1e-5)


def test_class_weights_weigh_an_ordinal_loss_by_grade():
    weighted = make_loss(LossConfig(class_weights="1,1,1,1,3"), "coral", 4, GRADES)
    plain = make_loss(LossConfig(), "coral", 4, GRADES)
    only_grade_4 = np.full(4, 4, np.int32)
    logits = tf.constant(LOGITS[:4])
    assert float(weighted(tf.constant(only_grade_4), logits)) == pytest.approx(
        3 * float(plain(tf.constant(only_grade_4), logits)), rel=1e-6
    )


def _numpy_grade_probabilities(above):
    at_least = np.concatenate([np.ones((len(above), 1)), above], axis=1)
    return at_least - np.concatenate([above, np.zeros((len(above), 1))], axis=1)


@pytest.mark.parametrize("head", ["coral", "corn"])
def test_ordinal_probabilities_match_numpy(head):
    sigmoid = expit(LOGITS)
    above = np.cumprod(sigmoid, axis=1) if head == "corn" else sigmoid
    above = np.minimum.accumulate(above, axis=1)  # the running minimum of the module
    expected = _numpy_grade_probabilities(above)
    probabilities = Grading(head).probabilities(tf.constant(LOGITS)).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert (probabilities >= -1e-7).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_coral_is_rank_consistent_for_every_input():
    """One shared weight vector and ordered biases: P(grade > k) can only fall with k, for
    any input and any weights (Cao et al. 2020, theorem 1)."""
    layer = CoralLogits()
    features = RNG.normal(0, 3, size=(500, 16)).astype(np.float32)
    layer.build(features.shape)
    layer.kernel.assign(RNG.normal(0, 1, size=(16, 1)).astype(np.float32))
    cumulative = tf.sigmoid(layer(tf.constant(features))).numpy()
    assert (np.diff(cumulative, axis=1) <= 0).all()


def test_corn_is_rank_consistent_by_its_product():
    cumulative = Grading("corn").cumulative(tf.constant(LOGITS)).numpy()
    assert (np.diff(cumulative, axis=1) <= 0).all()
    np.testing.assert_allclose(cumulative, np.cumprod(expit(LOGITS), axis=1), rtol=1e-5)


def test_regression_referable_probability_rises_with_its_output():
    outputs = tf.constant(np.linspace(-2, 6, 200, dtype=np.float32)[:, None])
    for link in [(4.0, 0.0), (1.3, -0.7), (9.0, 2.0)]:
        probabilities = Grading("regression", link=link).probabilities(outputs).numpy()
        referable = probabilities[:, 2:].sum(axis=1)
        assert (np.diff(referable) >= 0).all() and referable[0] < 0.5 < referable[-1]
        slope, shift = link
        np.testing.assert_allclose(  # P(grade >= 2) is the fitted logistic itself
            referable, expit(slope * (outputs.numpy()[:, 0] - 1.5) + shift), atol=1e-6
        )


def test_the_grade_call_cuts_the_expected_grade():
    probabilities = np.array([[0.1, 0.2, 0.4, 0.2, 0.1], [0.7, 0.2, 0.1, 0, 0]])
    np.testing.assert_allclose(expected_grades(probabilities), [2.0, 0.4])
    grading = Grading("coral", cut_points=(0.3, 2.5, 3.0, 3.5))
    assert grading.predicted_grades(probabilities).tolist() == [1, 1]
    assert Grading("coral").predicted_grades(probabilities).tolist() == [2, 0]
    assert Grading("softmax").predicted_grades(probabilities).tolist() == [2, 0]
    tf_call = grading.tf_predicted_grades(tf.constant(probabilities, tf.float32))
    assert tf_call.numpy().tolist() == [1, 1]


def test_fitted_cut_points_beat_or_equal_the_fixed_ones_where_fitted():
    """A regressor biased low (as a grader who under-calls): the fixed cuts lose kappa that
    cut-points moved down win back; on data where the fixed ones are right, no loss."""
    grades = RNG.integers(0, 5, size=300)
    biased = grades - 0.45 + RNG.normal(0, 0.35, size=300)
    fitted = fit_cut_points(biased, grades)
    assert list(fitted) == sorted(fitted)
    assert kappa_at(biased, grades, fitted) > kappa_at(biased, grades, GRADE_BOUNDARIES) + 0.02
    for seed in range(5):
        rng = np.random.default_rng(seed)
        scores, truth = rng.normal(2, 1.5, size=80), rng.integers(0, 5, size=80)
        cuts = fit_cut_points(scores, truth)
        assert kappa_at(scores, truth, cuts) >= kappa_at(scores, truth, GRADE_BOUNDARIES)


def test_cut_points_stay_fixed_where_kappa_is_undefined():
    assert fit_cut_points(np.full(5, 2.0), np.full(5, 2)) == GRADE_BOUNDARIES


def test_label_smoothing_on_an_ordinal_head_is_refused_naming_the_keys():
    with pytest.raises(ConfigError, match=r"loss.label_smoothing=0.1.*model.head=coral"):
        make_loss(LossConfig(label_smoothing=0.1), "coral", 4, GRADES)

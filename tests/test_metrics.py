import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from retina import metrics
from retina.metrics.undefined import as_records, gathered, one_line, where


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
    assert np.isnan(result["macro_auc"]) and np.isnan(result["cohen_kappa"])
    assert np.isnan(result["retfound_score"])
    assert len(caught) == 5 and all("undefined" in str(w.message) for w in caught)


def test_retfound_score_is_its_three_metrics_as_retfound_computes_them():
    """Every grade present: RETFound's own scikit-learn calls (engine_finetune.evaluate)."""
    rng = np.random.default_rng(3)
    grades = np.repeat(np.arange(5), 8)
    probabilities = rng.dirichlet(np.ones(5), size=len(grades))
    probabilities[np.arange(len(grades)), grades] += 0.4  # better than chance
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    result = metrics.clinical_metrics(grades, probabilities)
    one_hot = np.eye(5)[grades]
    f1 = f1_score(one_hot, np.eye(5)[predicted], zero_division=0, average="macro")
    auc = roc_auc_score(one_hot, probabilities, multi_class="ovr", average="macro")
    kappa = cohen_kappa_score(grades, predicted)
    assert result["macro_f1"] == pytest.approx(f1)
    assert result["macro_auc"] == pytest.approx(auc)
    assert result["cohen_kappa"] == pytest.approx(kappa)
    assert result["retfound_score"] == pytest.approx((f1 + auc + kappa) / 3)
    assert 0.3 < result["retfound_score"] < 1


def test_macro_auc_averages_the_grades_a_split_holds():
    grades = np.array([0, 0, 1, 1, 2, 2])  # no grade 3 or 4: RETFound's call would fail
    probabilities = np.eye(5)[[0, 1, 1, 0, 2, 2]] * 0.8 + 0.04
    result = metrics.clinical_metrics(grades, probabilities)
    expected = np.mean([metrics.roc_auc(grades == g, probabilities[:, g]) for g in range(3)])
    assert result["macro_auc"] == pytest.approx(expected) and result["macro_auc"] < 1


def test_referable_head_outputs_score_the_second_column():
    grades = np.array([0, 1, 2, 4])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    result = metrics.clinical_metrics(grades, probabilities)
    assert result["referable_auc"] == 1.0
    assert result["sensitivity"] == 1.0 and result["specificity"] == 1.0
    assert result["accuracy"] == 1.0 and result["confusion_matrix"] == [[2, 0], [0, 2]]
    assert np.isnan(result["quadratic_weighted_kappa"])


# --- Wilson interval, PPV, NPV --------------------------------------------------------------


@pytest.mark.parametrize(
    "successes, total, low, high",
    [
        # 8/10, z = 1.959964, z^2 = 3.841459: centre = (0.8 + z^2/20) / (1 + z^2/10)
        # = 0.992073 / 1.384146 = 0.716740; half-width = z / 1.384146 * sqrt(0.016 +
        # z^2/400) = 1.416010 * 0.160011 = 0.226578 -> (0.490162, 0.943318).
        (8, 10, 0.490162, 0.943318),
        # 0/n has low 0 and high z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277532.
        (0, 10, 0.0, 0.277532),
        # n/n mirrors it: low n / (n + z^2) = 10 / 13.841459 = 0.722468.
        (10, 10, 0.722468, 1.0),
    ],
)
def test_wilson_interval_by_hand(successes, total, low, high):
    result = metrics.wilson_interval(successes, total)
    assert result == pytest.approx((low, high), abs=1e-6)


def test_wilson_interval_matches_closed_form_and_widens_with_confidence():
    z = 2.5758293035489  # 99 %
    p, n = 0.3, 40
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert metrics.wilson_interval(12, 40, 0.99) == pytest.approx((centre - half, centre + half))
    narrow, wide = metrics.wilson_interval(12, 40, 0.8), metrics.wilson_interval(12, 40, 0.99)
    assert wide[0] < narrow[0] < 0.3 < narrow[1] < wide[1]


@pytest.mark.parametrize("successes, total", [(11, 10), (-1, 10)])
def test_wilson_interval_rejects_impossible_counts(successes, total):
    with pytest.raises(ValueError, match="successes"):
        metrics.wilson_interval(successes, total)


def test_ppv_npv_on_a_two_by_two_table():
    # tp=6 fp=2 fn=3 tn=9: PPV = 6/8, NPV = 9/12.
    positive = [1] * 6 + [0] * 2 + [1] * 3 + [0] * 9
    predicted = [1] * 6 + [1] * 2 + [0] * 3 + [0] * 9
    assert metrics.ppv(positive, predicted) == pytest.approx(0.75)
    assert metrics.npv(positive, predicted) == pytest.approx(0.75)
    assert metrics.sensitivity(positive, predicted) == pytest.approx(6 / 9)
    assert metrics.specificity(positive, predicted) == pytest.approx(9 / 11)


# --- AUC bootstrap --------------------------------------------------------------------------


def _two_eyes(n_patients, seed, separation=1.0):
    """Scans of patients with two eyes each; eyes of a patient share label and nearly score."""
    rng = np.random.default_rng(seed)
    referable = rng.random(n_patients) < 0.35
    base = rng.normal(referable * separation, 1.0)
    positive = np.repeat(referable, 2)
    scores = np.repeat(base, 2) + rng.normal(0, 0.3, 2 * n_patients)
    return positive, scores, np.repeat(np.arange(n_patients), 2)


def test_bootstrap_interval_contains_the_auc_and_narrows_with_more_data():
    small = _two_eyes(60, seed=1)
    large = _two_eyes(1500, seed=1)
    small_low, small_high = metrics.bootstrap_auc_interval(*small, n_resamples=500)
    large_low, large_high = metrics.bootstrap_auc_interval(*large, n_resamples=500)
    assert small_low < roc_auc_score(small[0], small[1]) < small_high
    assert large_low < roc_auc_score(large[0], large[1]) < large_high
    assert large_high - large_low < 0.5 * (small_high - small_low)


def test_bootstrap_is_deterministic_for_a_seed():
    data = _two_eyes(80, seed=2)
    first = metrics.bootstrap_auc_interval(*data, n_resamples=300, seed=5)
    assert metrics.bootstrap_auc_interval(*data, n_resamples=300, seed=5) == first
    assert metrics.bootstrap_auc_interval(*data, n_resamples=300, seed=6) != first


def test_each_resample_auc_agrees_with_scikit_learn_on_the_resampled_rows():
    rng = np.random.default_rng(3)
    clusters = rng.integers(0, 25, 70)  # uneven cluster sizes
    positive = rng.random(70) < 0.4
    scores = np.round(rng.random(70), 1)  # many ties, which count one half
    aucs = metrics.bootstrap_aucs(positive, scores, clusters, 40, seed=9)
    # Redo the same draws by hand: one row of cluster indices per resample, in order.
    draws = np.random.default_rng(9).integers(0, 25, size=(40, 25))
    labels = np.unique(clusters)
    for auc, drawn in zip(aucs, draws, strict=True):
        rows = np.concatenate([np.flatnonzero(clusters == labels[c]) for c in drawn])
        if positive[rows].all() or not positive[rows].any():
            assert np.isnan(auc)
        else:
            assert auc == pytest.approx(roc_auc_score(positive[rows], scores[rows]), abs=1e-12)


def test_bootstrap_keeps_both_eyes_of_a_patient_together():
    # Patient A: referable eye 0.9, healthy eye 0.1. Patient B: referable eye 0.2, healthy
    # eye 0.8. Resampling patients can only give AA (AUC 1), BB (AUC 0) or AB (3 of 4 pairs
    # ordered right: 0.75); resampling eyes would also give, say, 0.5 or single-class draws.
    positive = np.array([1, 0, 1, 0], bool)
    scores = np.array([0.9, 0.1, 0.2, 0.8])
    by_patient = metrics.bootstrap_aucs(positive, scores, np.array(["A", "A", "B", "B"]), 400, 0)
    assert set(np.unique(by_patient)) == {0.0, 0.75, 1.0}
    assert np.mean(by_patient == 0.75) == pytest.approx(0.5, abs=0.1)
    by_eye = metrics.bootstrap_aucs(positive, scores, np.arange(4), 400, 0)
    assert not set(np.unique(by_eye[~np.isnan(by_eye)])) <= {0.0, 0.75, 1.0}


def test_two_identical_eyes_per_patient_match_resampling_one_eye_per_patient():
    rng = np.random.default_rng(4)
    positive, scores = rng.random(50) < 0.4, rng.random(50)
    patients = np.arange(50)
    one_eye = metrics.bootstrap_auc_interval(positive, scores, patients, n_resamples=300)
    two_eyes = metrics.bootstrap_auc_interval(
        np.repeat(positive, 2), np.repeat(scores, 2), np.repeat(patients, 2), n_resamples=300
    )
    assert two_eyes == pytest.approx(one_eye, abs=1e-12)
    # Treating the copies as independent eyes overstates the data and narrows the interval.
    as_eyes = metrics.bootstrap_auc_interval(
        np.repeat(positive, 2), np.repeat(scores, 2), np.arange(100), n_resamples=300
    )
    assert as_eyes[1] - as_eyes[0] < 0.85 * (one_eye[1] - one_eye[0])


# --- Calibration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bins, expected",
    [
        # Two bins: [0, 0.5) has scores 0.1, 0.2 (mean 0.15) with 1 of 2 positive: 2/4 * 0.35;
        # [0.5, 1] has 0.8, 0.9 (mean 0.85), both positive: 2/4 * 0.15. Sum 0.25.
        (2, 0.25),
        # Ten bins, one scan each: (|0 - 0.1| + |1 - 0.2| + |1 - 0.8| + |1 - 0.9|) / 4 = 0.3.
        (10, 0.3),
        # One bin: mean score 0.5 against 3/4 positive.
        (1, 0.25),
    ],
)
def test_expected_calibration_error_by_hand(bins, expected):
    ece = metrics.expected_calibration_error([0, 1, 1, 1], [0.1, 0.2, 0.8, 0.9], bins)
    assert ece == pytest.approx(expected)


def test_calibration_points_by_hand_and_a_score_of_one_lands_in_the_last_bin():
    points = metrics.calibration_curve_points([0, 1, 1, 1, 0], [0.1, 0.2, 0.8, 1.0, 0.5], bins=2)
    assert points == [
        pytest.approx(
            {"lower": 0.0, "upper": 0.5, "mean_score": 0.15, "fraction_positive": 0.5, "count": 2}
        ),
        pytest.approx(
            {
                "lower": 0.5,
                "upper": 1.0,
                "mean_score": 2.3 / 3,
                "fraction_positive": 2 / 3,
                "count": 3,
            }
        ),
    ]


def test_calibration_rejects_scores_outside_zero_one():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.expected_calibration_error([0, 1], [0.2, 1.3])


# --- Thresholds and operating points --------------------------------------------------------

# Scores 0.1 .. 0.8; referable at 0.3, 0.5, 0.7, 0.8; healthy at 0.1, 0.2, 0.4, 0.6.
TABLE_SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
TABLE_POSITIVE = np.array([0, 0, 1, 0, 1, 0, 1, 1], bool)


@pytest.mark.parametrize(
    "target, expected",
    [(1.0, 0.3), (0.75, 0.5), (0.6, 0.5), (0.5, 0.7), (0.25, 0.8), (0.9, 0.3)],
)
def test_threshold_for_sensitivity_by_hand(target, expected):
    assert metrics.threshold_for_sensitivity(TABLE_POSITIVE, TABLE_SCORES, target) == expected


@pytest.mark.parametrize(
    "target, expected",
    # 2 of 4 healthy below t needs t above 0.2: the next score is 0.3; 3 of 4 needs t above
    # 0.4 -> 0.5; all 4 needs t above 0.6 -> 0.7; none needed -> the lowest score.
    [(0.5, 0.3), (0.75, 0.5), (0.7, 0.5), (1.0, 0.7), (0.0, 0.1)],
)
def test_threshold_for_specificity_by_hand(target, expected):
    assert metrics.threshold_for_specificity(TABLE_POSITIVE, TABLE_SCORES, target) == expected


def test_specificity_threshold_above_every_score_when_the_top_scan_is_healthy():
    positive = np.array([1, 0, 1, 0], bool)
    scores = np.array([0.2, 0.3, 0.5, 0.9])
    threshold = metrics.threshold_for_specificity(positive, scores, 1.0)
    assert threshold == np.nextafter(0.9, np.inf)
    with pytest.warns(RuntimeWarning, match="PPV is undefined"):  # nothing is referred
        point = metrics.operating_point(positive, scores, threshold)
    assert point["specificity"]["value"] == 1.0 and point["tp"] + point["fp"] == 0


def test_threshold_above_every_float32_score_survives_float32_storage():
    # The training loop stores thresholds in float32 variables and compares float32 scores.
    positive = np.array([1, 0, 1, 0], bool)
    scores = np.array([0.2, 0.3, 0.5, 0.9], np.float32)
    threshold = metrics.threshold_for_specificity(positive, scores, 1.0)
    assert np.float32(threshold) > scores.max()
    assert not (scores >= np.float32(threshold)).any()
    assert metrics.threshold_for_sensitivity(positive, scores, 0.0) == threshold


def test_calibration_tolerates_float32_rounding_above_one():
    scores = np.array([0.25, 1 + 1e-7])
    assert metrics.expected_calibration_error([0, 1], scores, bins=2) == pytest.approx(0.125)


def test_float_targets_do_not_demand_an_extra_case():
    # 9/10 == 0.9 exactly as sensitivity() computes it, though 0.9 * 10 > 9 in floats.
    positive = np.ones(10, bool)
    scores = np.arange(10) / 10
    threshold = metrics.threshold_for_sensitivity(positive, scores, 0.9)
    assert threshold == 0.1
    assert metrics.sensitivity(positive, scores >= threshold) >= 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thresholds_agree_with_brute_force_over_score_values(seed):
    rng = np.random.default_rng(seed)
    positive = rng.random(40) < 0.4
    scores = np.round(rng.random(40), 1)  # ties on purpose
    candidates = np.append(np.unique(scores), np.nextafter(scores.max(), np.inf))
    for target in (0.5, 0.8, 0.95):
        sens = [metrics.sensitivity(positive, scores >= t) for t in candidates]
        spec = [metrics.specificity(positive, scores >= t) for t in candidates]
        best_sens = max(t for t, s in zip(candidates, sens, strict=True) if s >= target)
        best_spec = min(t for t, s in zip(candidates, spec, strict=True) if s >= target)
        assert metrics.threshold_for_sensitivity(positive, scores, target) == best_sens
        assert metrics.threshold_for_specificity(positive, scores, target) == best_spec


@pytest.mark.parametrize(
    "threshold, counts, rates",
    [
        # Referred 0.5 .. 0.8: tp 3 (0.5, 0.7, 0.8), fp 1 (0.6), tn 3, fn 1 (0.3).
        (
            0.5,
            (3, 1, 3, 1),
            {"sensitivity": (3, 4), "specificity": (3, 4), "ppv": (3, 4), "npv": (3, 4)},
        ),
        # Referred 0.6 .. 0.8: tp 2 (0.7, 0.8), fp 1 (0.6), tn 3, fn 2 (0.3, 0.5).
        (
            0.6,
            (2, 1, 3, 2),
            {"sensitivity": (2, 4), "specificity": (3, 4), "ppv": (2, 3), "npv": (3, 5)},
        ),
    ],
)
def test_operating_point_counts_rates_and_intervals(threshold, counts, rates):
    result = metrics.operating_point(TABLE_POSITIVE, TABLE_SCORES, threshold)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == counts
    for name, (successes, total) in rates.items():
        rate = result[name]
        assert rate["value"] == pytest.approx(successes / total)
        assert (rate["low"], rate["high"]) == pytest.approx(
            metrics.wilson_interval(successes, total)
        )
    assert result["threshold"] == threshold
    json.dumps(result)


# --- Per grade and per patient --------------------------------------------------------------


def test_per_grade_agrees_with_scikit_learn():
    rng = np.random.default_rng(5)
    grades, predicted = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    result = metrics.per_grade(grades, predicted)
    precision = precision_score(grades, predicted, average=None, labels=range(5))
    recall = recall_score(grades, predicted, average=None, labels=range(5))
    assert list(result) == ["0", "1", "2", "3", "4"]
    for grade in range(5):
        assert result[str(grade)]["precision"] == pytest.approx(precision[grade])
        assert result[str(grade)]["recall"] == pytest.approx(recall[grade])
        assert result[str(grade)]["support"] == int(np.sum(grades == grade))


def test_per_grade_undefined_grades_are_nan_with_a_warning():
    # Grade 3 is never predicted (precision undefined); grade 4 never occurs (recall undefined
    # and, since it is never predicted either, precision too).
    with pytest.warns(RuntimeWarning, match="undefined"):
        result = metrics.per_grade([0, 1, 2, 3], [0, 1, 2, 2])
    assert math.isnan(result["3"]["precision"]) and result["3"]["recall"] == 0.0
    assert math.isnan(result["4"]["precision"]) and math.isnan(result["4"]["recall"])
    assert result["2"] == {"precision": 0.5, "recall": 1.0, "support": 1}


def test_patient_level_takes_the_worse_eye():
    scans = pd.DataFrame(
        {
            "patient": ["p2", "p1", "p1", "p2", "p3"],
            "eye": ["left", "left", "right", "right", "left"],
            "grade": [0, 1, 3, 0, 2],
            "predicted_grade": [1, 2, 0, 0, 2],
            "referable_probability": [0.2, 0.6, 0.1, 0.4, 0.7],
        }
    )
    patients = metrics.patient_level(scans)
    expected = pd.DataFrame(
        {
            "patient": ["p1", "p2", "p3"],
            "n_scans": [2, 2, 1],
            "grade": [3, 0, 2],
            "predicted_grade": [2, 1, 2],
            "referable_probability": [0.6, 0.4, 0.7],
        }
    )
    pd.testing.assert_frame_equal(patients, expected, check_dtype=False)


def test_patient_level_names_missing_columns():
    with pytest.raises(ValueError, match="referable_probability"):
        metrics.patient_level(pd.DataFrame({"patient": [1], "eye": ["l"], "grade": [0]}))


# --- The evaluation table -------------------------------------------------------------------


def _random_scans(n=300, seed=6):
    rng = np.random.default_rng(seed)
    grades = rng.integers(0, 5, n)
    predicted = np.clip(grades + rng.integers(-1, 2, n), 0, 4)
    scores = np.clip((grades >= 2) * 0.3 + rng.random(n) * 0.7, 0, 1)
    return grades, predicted, scores, np.arange(n) // 2


def test_evaluation_metrics_agree_with_scikit_learn():
    grades, predicted, scores, patients = _random_scans()
    result = metrics.evaluation_metrics(
        grades, predicted, scores, patients, {"at_half": 0.5}, n_resamples=200
    )
    positive = grades >= 2
    auc = roc_auc_score(positive, scores)
    assert result["n"] == 300 and result["n_referable"] == int(positive.sum())
    assert result["n_clusters"] == 150
    assert result["referable_auc"]["value"] == pytest.approx(auc)
    assert result["referable_auc"]["low"] < auc < result["referable_auc"]["high"]
    assert result["confusion_matrix"] == confusion_matrix(grades, predicted).tolist()
    assert result["accuracy"] == pytest.approx(np.mean(grades == predicted))
    kappa = cohen_kappa_score(grades, predicted, weights="quadratic")
    assert result["quadratic_weighted_kappa"] == pytest.approx(kappa)
    assert result["per_grade"] == metrics.per_grade(grades, predicted)
    point = result["operating_points"]["at_half"]
    assert point["tp"] == int(np.sum(positive & (scores >= 0.5)))
    ece = metrics.expected_calibration_error(positive, scores)
    assert result["expected_calibration_error"] == ece
    json.loads(json.dumps(result))  # every value is a plain Python number or container


def test_evaluation_metrics_with_a_referable_head_are_binary():
    grades, _, scores, patients = _random_scans()
    predicted = (scores >= 0.5).astype(int)
    result = metrics.evaluation_metrics(
        grades, predicted, scores, patients, {}, n_resamples=50, binary_head=True
    )
    truth = (grades >= 2).astype(int)
    assert result["confusion_matrix"] == confusion_matrix(truth, predicted).tolist()
    assert result["accuracy"] == pytest.approx(np.mean(truth == predicted))
    assert math.isnan(result["quadratic_weighted_kappa"])
    assert "per_grade" not in result and result["operating_points"] == {}


# --- Degenerate inputs: nan with a RuntimeWarning, never an exception -----------------------

ONE_CLASS = (np.zeros(4, bool), np.array([0.1, 0.4, 0.35, 0.8]))
EMPTY = (np.zeros(0, bool), np.zeros(0))


@pytest.mark.parametrize("positive, scores", [ONE_CLASS, EMPTY], ids=["one_class", "empty"])
@pytest.mark.parametrize(
    "compute",
    [
        lambda p, s: metrics.roc_auc(p, s),
        lambda p, s: metrics.bootstrap_auc_interval(p, s, np.arange(len(s)), n_resamples=20)[0],
        lambda p, s: metrics.bootstrap_auc_interval(p, s, np.arange(len(s)), n_resamples=20)[1],
        lambda p, s: metrics.threshold_for_sensitivity(p, s, 0.9),
        lambda p, s: metrics.sensitivity(p, s >= 0.5),
        lambda p, s: metrics.ppv(p, s >= 0.9),
        lambda p, s: metrics.operating_point(p, s, 0.5)["sensitivity"]["value"],
        lambda p, s: metrics.operating_point(p, s, 0.5)["sensitivity"]["high"],
    ],
    ids=["auc", "auc_low", "auc_high", "threshold", "sensitivity", "ppv", "op_sens", "op_high"],
)
def test_degenerate_inputs_give_nan_with_a_warning(positive, scores, compute):
    with pytest.warns(RuntimeWarning, match="undefined"):
        value = compute(positive, scores)
    assert math.isnan(value)


@pytest.mark.parametrize(
    "compute",
    [
        lambda: metrics.wilson_interval(0, 0)[0],
        lambda: metrics.threshold_for_specificity(np.ones(3, bool), [0.2, 0.5, 0.9], 0.9),
        lambda: metrics.specificity(np.ones(3, bool), [1, 0, 1]),
        lambda: metrics.npv([1, 0, 1], [1, 1, 1]),
        lambda: metrics.expected_calibration_error([], []),
        lambda: metrics.threshold_for_specificity([], [], 0.9),
        lambda: metrics.operating_point([0, 1], [0.2, 0.7], float("nan"))["ppv"]["value"],
        lambda: metrics.per_grade([], [])["2"]["recall"],
        lambda: metrics.bootstrap_auc_interval([1, 0], [0.7, 0.2], [0, 1], n_resamples=1)[0],
    ],
    ids=[
        "wilson_empty",
        "spec_threshold_no_negative",
        "specificity",
        "npv",
        "ece_empty",
        "spec_threshold_empty",
        "nan_threshold",
        "per_grade_empty",
        "no_resample_with_two_classes",
    ],
)
def test_other_degenerate_inputs_give_nan_with_a_warning(compute):
    # The last case: with seed 0, the single resample of two one-scan clusters draws the same
    # cluster twice, so no resample holds both classes.
    with pytest.warns(RuntimeWarning, match="undefined"):
        value = compute()
    assert math.isnan(value)


def test_calibration_curve_of_nothing_is_empty_with_a_warning():
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert metrics.calibration_curve_points([], []) == []


@pytest.mark.parametrize("binary_head", [False, True])
def test_evaluation_of_a_single_class_or_empty_set_never_raises(binary_head):
    for grades in (np.zeros(6, int), np.zeros(0, int)):
        scores = np.linspace(0, 0.4, len(grades))
        with pytest.warns(RuntimeWarning, match="undefined"):
            result = metrics.evaluation_metrics(
                grades,
                grades,
                scores,
                np.arange(len(grades)),
                {"t": 0.3},
                n_resamples=20,
                binary_head=binary_head,
            )
        assert all(math.isnan(result["referable_auc"][key]) for key in ("value", "low", "high"))
        assert math.isnan(result["operating_points"]["t"]["sensitivity"]["value"])
        assert result["n"] == len(grades)
        json.dumps(result)


def test_patient_level_of_no_scans_is_an_empty_table():
    empty = pd.DataFrame({column: [] for column in metrics.PATIENT_COLUMNS})
    patients = metrics.patient_level(empty)
    assert len(patients) == 0
    assert list(patients.columns) == [
        "patient",
        "n_scans",
        "grade",
        "predicted_grade",
        "referable_probability",
    ]


def test_weighted_kappas_equal_scikit_learn_with_sample_weights():
    from retina.metrics.bootstrap import weighted_kappas

    rng = np.random.default_rng(4)
    grades = rng.integers(0, 5, 120)
    predicted = np.clip(grades + rng.integers(-2, 3, 120), 0, 4)
    weights = rng.integers(0, 4, (6, 120))
    expected = [
        cohen_kappa_score(grades, predicted, weights="quadratic", sample_weight=w) for w in weights
    ]
    np.testing.assert_allclose(weighted_kappas(grades, predicted, weights), expected, rtol=1e-12)


def test_pairing_finds_a_difference_that_separate_intervals_miss():
    """Two scorers sharing most of their error on 200 patients: their separate AUC intervals
    overlap, the paired interval of the difference does not reach 0."""
    from retina.metrics.bootstrap import paired_auc_difference

    rng = np.random.default_rng(0)
    positive, _, clusters = _two_eyes(200, seed=2)
    shared = rng.normal(0, 1.0, len(positive))
    better = positive + shared + rng.normal(0, 0.1, len(positive))
    worse = positive + shared + rng.normal(0, 0.8, len(positive))
    difference, low, high = paired_auc_difference(positive, better, worse, clusters, 1000, 0)
    assert difference == pytest.approx(
        roc_auc_score(positive, better) - roc_auc_score(positive, worse)
    )
    assert 0 < low < difference < high
    better_low, _ = metrics.bootstrap_auc_interval(positive, better, clusters, 1000, 0)
    _, worse_high = metrics.bootstrap_auc_interval(positive, worse, clusters, 1000, 0)
    assert better_low < worse_high  # separately, the intervals overlap
    assert paired_auc_difference(positive, better, better, clusters, 200, 0) == (0.0, 0.0, 0.0)


def test_subgroup_metrics_match_each_group_alone_and_flag_small_groups():
    from sklearn.metrics import roc_auc_score

    from retina.metrics.subgroups import subgroup_columns, subgroup_metrics

    rng = np.random.default_rng(2)
    n = 90
    table = pd.DataFrame(
        {
            "grade": rng.choice(5, n, p=[0.5, 0.1, 0.2, 0.1, 0.1]),
            "patient": np.repeat([f"p{i}" for i in range(n // 2)], 2),
            "site": np.repeat(["A", "B", "C"], [50, 30, 10]),
            "age": rng.integers(30, 85, n),
            "gradability": np.where(rng.random(n) < 0.2, "dark", ""),
        }
    )
    table["referable_probability"] = np.clip(
        (table["grade"] >= 2) * 0.4 + rng.random(n) * 0.6, 0, 1
    )
    table = pd.concat([table, subgroup_columns(table)], axis=1)
    result = subgroup_metrics(
        table, ["site", "age_band", "image_quality", "absent"], {"default": 0.5}, 200
    )
    assert set(result) == {"site", "age_band", "image_quality"}
    for site, rows in table.groupby("site"):
        group = result["site"][site]
        positive = rows["grade"] >= 2
        assert group["n"] == len(rows) and group["n_referable"] == positive.sum()
        assert group["referable_auc"]["value"] == pytest.approx(
            roc_auc_score(positive, rows["referable_probability"]), abs=1e-12
        )
        referred = rows["referable_probability"] >= 0.5
        sensitivity = group["operating_points"]["default"]["sensitivity"]
        assert sensitivity["value"] == pytest.approx(referred[positive].mean())
        assert group["too_small"] == (len(rows) < 30 or positive.sum() < 10)
    assert result["site"]["C"]["too_small"]
    assert sum(g["n"] for g in result["age_band"].values()) == n
    assert set(result["image_quality"]) == {"gradable", "flagged"}


def test_an_evaluation_gathers_its_undefined_metrics_into_one_line_without_warnings():
    """Inside ``gathered()`` nothing warns; each undefined metric is recorded once with where
    it was computed and why, and the line names each metric and reason once."""
    grades = np.array([0, 1, 0, 1])  # no referable scan: sensitivity is undefined everywhere
    scores = np.array([0.1, 0.7, 0.2, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the test
        with gathered() as found:
            with where("eye level"):
                metrics.evaluation_metrics(
                    grades,
                    grades,
                    scores,
                    np.arange(4),
                    {"default": 0.5, "high": 0.95},
                    n_resamples=20,
                )
    places = {(item.metric, item.where) for item in found}
    assert ("sensitivity", "eye level / operating point default") in places
    assert ("sensitivity", "eye level / operating point high") in places
    assert ("AUC", "eye level") in places
    assert ("PPV", "eye level / operating point high") in places  # nothing above 0.95
    line = one_line(found)
    assert "\n" not in line and line.startswith(f"{len(found)} metrics undefined")
    assert line.count("sensitivity, no positive case (2x)") == 1
    assert "AUC, only one class is present (eye level)" in line
    assert as_records(found)[0] == {
        "metric": found[0].metric,
        "where": found[0].where,
        "reason": found[0].reason,
    }


@pytest.mark.parametrize(
    "statistic, arguments",
    [
        # One class in every resample: the AUC is undefined in all of them.
        ("AUC", ([0, 0, 0], [0.2, 0.4, 0.6], [0.3, 0.1, 0.5])),
        # A single grade in truth and both predictions: kappa is 0/0 in every resample.
        ("kappa", ([2, 2, 2], [2, 2, 2], [2, 2, 2])),
    ],
)
def test_a_paired_difference_undefined_in_every_resample_is_nan_with_a_reason(statistic, arguments):
    from retina.metrics.bootstrap import paired_auc_difference, paired_kappa_difference

    paired = paired_auc_difference if statistic == "AUC" else paired_kappa_difference
    with pytest.warns(RuntimeWarning, match=f"paired {statistic} difference interval"):
        _, low, high = paired(*arguments, clusters=[0, 1, 2], n_resamples=50)
    assert math.isnan(low) and math.isnan(high)

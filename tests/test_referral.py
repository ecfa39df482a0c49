"""Uncertainty measures and referral (retention) curves against brute-force references."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from retina.metrics.calibration import apply_platt, fit_platt
from retina.metrics.retention import TABLE_FRACTIONS, retention_curves
from retina.metrics.uncertainty import scan_uncertainty, uncertainty_measures


def _entropy(p):
    return -(p * np.log(np.where(p > 0, p, 1))).sum(-1)


def test_entropy_and_mutual_information_match_a_numpy_reference():
    samples = np.array(
        [
            [[0.7, 0.1, 0.1, 0.05, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2], [1.0, 0, 0, 0, 0]],
            [[0.1, 0.1, 0.6, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2], [1.0, 0, 0, 0, 0]],
            [[0.4, 0.3, 0.2, 0.05, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2], [1.0, 0, 0, 0, 0]],
        ]
    )
    measures = uncertainty_measures(samples)
    predictive = _entropy(samples.mean(0))
    expected = np.mean([_entropy(s) for s in samples], axis=0)
    np.testing.assert_allclose(measures["predictive_entropy"], predictive, atol=1e-12)
    np.testing.assert_allclose(measures["expected_entropy"], expected, atol=1e-12)
    np.testing.assert_allclose(measures["mutual_information"], predictive - expected, atol=1e-12)
    assert measures["mutual_information"][0] > 0.1  # the samples disagree
    assert measures["mutual_information"][1:] == pytest.approx([0, 0], abs=1e-12)  # they agree
    assert measures["predictive_entropy"][1] == pytest.approx(np.log(5))
    referable = scan_uncertainty(samples)
    r = samples[..., 2:].sum(-1)
    bernoulli = np.stack([1 - r, r], -1)
    np.testing.assert_allclose(
        referable["referable_predictive_entropy"], _entropy(bernoulli.mean(0)), atol=1e-12
    )
    assert set(referable) >= {"grade_mutual_information", "referable_expected_entropy"}


def test_platt_scaling_recovers_a_known_miscalibration():
    rng = np.random.default_rng(0)
    log_odds = rng.normal(0, 2, 20000)
    positive = rng.random(20000) < expit(1.5 * log_odds - 0.7)  # the truth's log-odds
    platt = fit_platt(positive, expit(log_odds))
    assert platt["slope"] == pytest.approx(1.5, abs=0.05)
    assert platt["intercept"] == pytest.approx(-0.7, abs=0.05)
    with pytest.raises(ValueError, match="both referable and non-referable"):
        fit_platt(np.ones(5, bool), np.full(5, 0.3))


def test_referable_uncertainty_is_measured_on_recalibrated_samples():
    """Each sample's referable probability is recalibrated, then the entropies are taken;
    the TF measure the SavedModel computes is the same."""
    from retina.uncertainty.sampling import tf_referable_uncertainty

    rng = np.random.default_rng(1)
    samples = rng.dirichlet(np.ones(5), size=(6, 40))
    platt = {"slope": 1.2, "intercept": 0.9}
    measures = scan_uncertainty(samples, platt)
    r = expit(1.2 * logit(samples[..., 2:].sum(-1)) + 0.9)
    bernoulli = np.stack([1 - r, r], -1)
    predictive = _entropy(bernoulli.mean(0))
    expected = np.mean([_entropy(s) for s in bernoulli], axis=0)
    np.testing.assert_allclose(measures["referable_predictive_entropy"], predictive, atol=1e-12)
    np.testing.assert_allclose(
        measures["referable_mutual_information"], predictive - expected, atol=1e-12
    )
    np.testing.assert_allclose(
        measures["grade_predictive_entropy"], scan_uncertainty(samples)["grade_predictive_entropy"]
    )  # the grades are not recalibrated
    for measure in ("predictive_entropy", "mutual_information"):
        in_graph = tf_referable_uncertainty(samples.astype(np.float32), measure, platt).numpy()
        np.testing.assert_allclose(in_graph, measures[f"referable_{measure}"], atol=1e-5)


def test_recalibration_restores_referral_when_probabilities_run_low():
    """The mechanism behind ``uncertainty.calibrate``: scores biased low (log-odds 2 below
    the truth's) put the borderline positives among confident negatives, so the raw
    entropy's referral loses AUC against random; Platt-recalibrated on a validation half,
    the same scores' entropy gains."""
    rng = np.random.default_rng(3)
    log_odds = rng.normal(0, 2, 2000)
    positive = rng.random(2000) < expit(log_odds)
    scores = expit(log_odds - 2)
    platt = fit_platt(positive[:1000], scores[:1000])
    test, patients = slice(1000, None), np.arange(1000)

    def gain(ranked_by):
        probabilities = np.stack([1 - ranked_by, ranked_by], -1)
        uncertainty = uncertainty_measures(probabilities[None])["predictive_entropy"]
        curves = retention_curves(
            positive[test], scores[test], uncertainty, patients, 0.5, n_resamples=200
        )
        return curves["area_minus_random"]["referable_auc"]

    assert gain(scores[test])["high"] < 0
    assert gain(apply_platt(scores[test], platt))["low"] > 0


@pytest.fixture(scope="module")
def scored():
    """300 scans of 150 patients; the uncertain scans are the ones the model gets wrong."""
    rng = np.random.default_rng(5)
    positive = rng.random(300) < 0.35
    hard = rng.random(300) < 0.3
    scores = np.clip(np.where(positive, 0.7, 0.3) + rng.normal(0, np.where(hard, 0.35, 0.1)), 0, 1)
    uncertainty = np.where(hard, 0.6, 0.2) + rng.normal(0, 0.1, 300)
    return positive, scores, uncertainty, np.repeat(np.arange(150), 2)


def test_retention_curves_match_a_brute_force_reference(scored):
    positive, scores, uncertainty, patients = scored
    curves = retention_curves(positive, scores, uncertainty, patients, 0.5, n_resamples=200)
    order = np.argsort(uncertainty, kind="stable")
    for index, fraction in enumerate(TABLE_FRACTIONS):
        kept = order[: int(np.floor(300 * fraction + 1e-9))]
        referred = order[len(kept) :]
        decided = scores >= 0.5
        plain = curves["table"]["plain"]
        assert plain["referable_auc"][index]["value"] == pytest.approx(
            roc_auc_score(positive[kept], scores[kept]), abs=1e-9
        )
        assert plain["accuracy"][index]["value"] == pytest.approx(
            np.mean(decided[kept] == positive[kept]), abs=1e-9
        )
        assert plain["sensitivity"][index]["value"] == pytest.approx(
            decided[kept][positive[kept]].mean(), abs=1e-9
        )
        oracle_scores = scores.copy()
        oracle_scores[referred] = np.where(positive[referred], 2.0, -1.0)
        oracle = curves["table"]["oracle"]
        assert oracle["referable_auc"][index]["value"] == pytest.approx(
            roc_auc_score(positive, oracle_scores), abs=1e-9
        )
        correct = (decided[kept] == positive[kept]).sum() + len(referred)
        assert oracle["accuracy"][index]["value"] == pytest.approx(correct / 300, abs=1e-9)


def test_oracle_is_never_below_plain_and_uncertainty_beats_random(scored):
    positive, scores, uncertainty, patients = scored
    curves = retention_curves(positive, scores, uncertainty, patients, 0.5, n_resamples=300)
    full = curves["curve"]
    for metric, plain in full["plain"].items():
        pairs = [
            (p, o) for p, o in zip(plain, full["oracle"][metric], strict=True) if p is not None
        ]
        assert pairs and all(o >= p - 1e-12 for p, o in pairs), metric
    random = curves["table"]["random"]
    for metric in ("referable_auc", "accuracy"):
        everything = curves["table"]["plain"][metric][-1]["value"]  # kept fraction 1.0
        for estimate in random[metric]:  # flat: the full-set value inside every interval
            assert estimate["low"] <= everything <= estimate["high"], (metric, estimate)
        assert curves["area_minus_random"][metric]["low"] > 0  # referring the unsure helps


def test_mc_dropout_samples_differ_with_dropout_and_agree_without():
    import tensorflow as tf

    from retina.config import ModelConfig
    from retina.models import build_model
    from retina.uncertainty.sampling import mc_dropout_probabilities

    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3)).astype(np.uint8)
    with_dropout = build_model(ModelConfig(widths=[8, 16], dropout=0.5), 48)
    sample = tf.function(mc_dropout_probabilities(with_dropout, 8))
    samples = sample(images).numpy()
    assert samples.shape == (8, 6, 5)
    assert np.abs(samples[0] - samples[1]).max() > 1e-3
    reordered = sample(images[[4, 0]]).numpy()  # a scan's samples do not depend on its batch
    np.testing.assert_allclose(reordered[:, 0], samples[:, 4], atol=1e-6)
    without = build_model(ModelConfig(widths=[8, 16], dropout=0.0), 48)
    samples = tf.function(mc_dropout_probabilities(without, 4))(images).numpy()
    assert np.abs(samples - samples[:1]).max() == 0
    plain = tf.nn.softmax(without(images, training=False)).numpy()
    np.testing.assert_allclose(samples[0], plain, atol=1e-6)


def _copy(run, target):
    """A copy of a shared run (evaluations write into it)."""
    shutil.copytree(run, target)
    return target


@pytest.fixture(scope="module")
def second_run(shared_data, tmp_path_factory):
    """Another one-epoch smoke run (seed 1) beside the session's smoke run."""
    from conftest import smoke_config
    from retina.training.loop import train

    run_dir = tmp_path_factory.mktemp("second") / "run"
    overrides = ["train.epochs=1", "train.evaluate_test=false", "seed=1"]
    train(smoke_config(shared_data, overrides), run_dir)
    return run_dir


def test_an_ensemble_of_one_run_is_that_run_and_of_two_averages_them(
    smoke_run, second_run, tmp_path
):
    from retina.evaluation.ensembles import evaluate_ensemble
    from retina.evaluation.held_out import Options, evaluate_run

    def probabilities(folder):
        return pd.read_csv(folder / "predictions.csv").filter(like="prob_grade_").to_numpy()

    alone = _copy(smoke_run, tmp_path / "alone")
    single = evaluate_run(alone, "best", n_resamples=50)
    one = evaluate_ensemble([alone], tmp_path / "one", "best", options=Options(n_resamples=50))
    same = [json.dumps(m["eye_level"], sort_keys=True) for m in (one, single)]  # nan == nan
    assert same[0] == same[1]
    assert one["referral"]["method"] == "ensemble"
    other = evaluate_run(_copy(second_run, tmp_path / "other"), "best", n_resamples=50)
    two = evaluate_ensemble(
        [alone, tmp_path / "other"], tmp_path / "two", "best", options=Options(n_resamples=50)
    )
    assert two["eye_level"]["n"] == single["eye_level"]["n"]
    mean = (
        probabilities(alone / "eval" / f"{single['checkpoint']}-test")
        + probabilities(tmp_path / "other" / "eval" / f"{other['checkpoint']}-test")
    ) / 2
    np.testing.assert_allclose(probabilities(tmp_path / "two" / "best-test"), mean, atol=2e-6)
    mutual = pd.read_csv(tmp_path / "two" / "best-test" / "predictions.csv")
    assert (mutual["referable_mutual_information"] > 0).any()  # two members disagree


def test_members_that_preprocess_differently_are_refused(smoke_run, tmp_path):
    import yaml

    from retina.errors import ConfigError
    from retina.uncertainty.ensemble import load_members

    changed = _copy(smoke_run, tmp_path / "changed")
    config = yaml.safe_load((changed / "config.yaml").read_text())
    config["preprocess"]["clahe"] = True
    (changed / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"preprocesses differently .*preprocess.clahe"):
        load_members([smoke_run, changed], "best")


def test_rebalancing_resamples_the_shifted_set_to_the_in_domain_grade_mix():
    from retina.evaluation.shift import rebalanced

    shifted = pd.DataFrame({"grade": np.repeat([0, 1, 2, 3, 4], [10, 10, 60, 10, 10])})
    shifted["scan_id"] = [f"s{i}" for i in range(len(shifted))]
    reference = pd.Series(np.repeat([0, 1, 2, 3, 4], [736, 71, 147, 23, 23]))  # EyePACS mix
    resampled = rebalanced(shifted, reference, seed=0)
    counts = resampled["grade"].value_counts().sort_index().tolist()
    assert counts == [74, 7, 15, 2, 2]  # round(share x 100 scans)
    assert set(resampled["scan_id"]) <= set(shifted["scan_id"])


def test_a_policy_chosen_for_another_checkpoint_is_not_applied_or_exported(tmp_path):
    """Its threshold and calibration were fitted on that checkpoint's predictions."""
    from retina.config import UncertaintyConfig
    from retina.errors import ConfigError
    from retina.serving.artifacts import export_policy
    from retina.uncertainty.referral import read_policy

    policy = {
        "method": "mc_dropout",
        "measure": "predictive_entropy",
        "samples": 20,
        "calibration": {"slope": 1.1, "intercept": 0.8},
        "checkpoint": "ckpt-224",
        "threshold": 0.6,
    }
    (tmp_path / "referral.json").write_text(json.dumps(policy))
    u = UncertaintyConfig(method="mc_dropout")
    assert read_policy(tmp_path, u, 20, "ckpt-224") == policy
    assert read_policy(tmp_path, u, 20, "ckpt-192") is None
    assert (
        read_policy(
            tmp_path, UncertaintyConfig(method="mc_dropout", calibrate=False), 20, "ckpt-224"
        )
        is None
    )
    assert export_policy(tmp_path, "ckpt-224") == policy
    with pytest.raises(
        ConfigError, match="checkpoint=ckpt-192 split=val uncertainty.method=mc_dropout"
    ):
        export_policy(tmp_path, "ckpt-192")

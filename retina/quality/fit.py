"""Fitting the gate at training time, on numpy arrays of the model's pooled features and
the image measures: the training scans' principal axes and distances, the learnt quality
score, and both thresholds on validation.

The learnt score is a logistic regression (L2 chosen by cross-validation on the training
scans, classes balanced) of the graders' gradable label on the whitened principal
coordinates of the pooled features and the standardized image measures: a small head on
what the model already computes, fitted after each epoch beside the loop rather than
trained by it, so it neither changes the grading model's training nor the resumed run's
bit-exact path (it reads the weights, draws no random number), and it is fitted again
whenever the features move. A separate quality network would need its own training, its
own checkpointed state and a second backbone pass in the SavedModel; with a few dozen
ungradable training scans a linear head on 45 inputs is what the data can support.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from retina.config import QualityConfig
from retina.errors import ConfigError
from retina.models.heads import pooled_width
from retina.quality.gate import (
    GateParams,
    feature_distance,
    gate_components,
    learnt_score,
    measure_distance,
    unfitted_params,
)
from retina.quality.scoring import scan_signals

log = logging.getLogger(__name__)
TRAIN_QUANTILE = 0.99  # each distance is scaled by its training scans' 99th percentile
SCORE_FOLDS, SCORE_STRENGTHS = 5, 5  # the learnt score's cross-validated L2 strength
RIDGE = 1e-3  # added to the variances, relative to their mean: few scans, many features


def principal_axes(features: np.ndarray, components: int):
    """(mean, axes (k, width), variances (k,), mean squared residual) of training features;
    k is at most the scans less one."""
    mean = features.mean(0)
    centred = features - mean
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    k = max(1, min(components, len(features) - 1, axes.shape[0]))
    variances = singular[:k] ** 2 / max(len(features) - 1, 1)
    variances = variances + RIDGE * max(variances.mean(), 1e-12)
    residual = centred - centred @ axes[:k].T @ axes[:k]
    residual_variance = max(float(np.mean(np.sum(residual**2, 1))), 1e-6)
    padded = np.zeros((components, features.shape[1]), np.float64)
    padded[:k] = axes[:k]
    padded_variances = np.ones(components)
    padded_variances[:k] = variances
    return mean, padded, padded_variances, residual_variance


def measure_statistics(measures: np.ndarray):
    """(mean, precision, standard deviations) of the training scans' image measures."""
    mean = measures.mean(0)
    covariance = np.cov(measures, rowvar=False) if len(measures) > 1 else np.eye(len(mean))
    covariance = np.atleast_2d(covariance)
    covariance += RIDGE * max(np.trace(covariance) / len(mean), 1e-6) * np.eye(len(mean))
    return mean, np.linalg.inv(covariance), np.sqrt(np.diag(covariance))


def distances(params: GateParams, features: np.ndarray, measures: np.ndarray):
    """(feature distances, measure distances, inputs of the score) by the gate's own
    TensorFlow functions in float32, so a threshold chosen on them is the one the verdict
    meets (a validation scan at the threshold stays on its side)."""
    constants = {k: tf.constant(v) for k, v in params.as_dict().items()}
    feature_d, whitened = feature_distance(constants, tf.constant(features, tf.float32))
    measure_d, standardized = measure_distance(constants, tf.constant(measures, tf.float32))
    inputs = tf.concat([whitened, standardized], 1)
    return feature_d.numpy(), measure_d.numpy(), inputs.numpy()


def fit_score(inputs: np.ndarray, gradable: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(weights, bias) of P(gradable); None without both labels among the training scans.

    The L2 strength is chosen by stratified cross-validation on the training scans (the
    ROC AUC of each fold, unshuffled folds: deterministic), where each class has enough
    scans for it; C=1 otherwise."""
    counts = np.bincount(np.asarray(gradable, int), minlength=2)
    if counts.min() == 0:
        return None
    folds = int(min(SCORE_FOLDS, counts.min()))
    strength = cross_validated_strength(inputs, gradable, folds) if folds >= 2 else 1.0
    model = _logistic(strength).fit(inputs, gradable)
    return model.coef_[0], float(model.intercept_[0])


def _logistic(strength: float) -> LogisticRegression:
    return LogisticRegression(C=strength, class_weight="balanced", max_iter=1000)


def cross_validated_strength(inputs: np.ndarray, gradable: np.ndarray, folds: int) -> float:
    """The inverse L2 strength (SCORE_STRENGTHS of them, 1e-3 to 10: the inputs are
    standardized, and weaker penalties only slow lbfgs on separable folds) with the best
    mean ROC AUC over stratified, unshuffled folds of the training scans."""
    splits = list(StratifiedKFold(folds).split(inputs, gradable))

    def mean_auc(strength: float) -> float:
        aucs = []
        for fit_on, held in splits:
            model = _logistic(strength).fit(inputs[fit_on], gradable[fit_on])
            aucs.append(roc_auc_score(gradable[held], model.decision_function(inputs[held])))
        return float(np.mean(aucs))

    strengths = np.logspace(-3, 1, SCORE_STRENGTHS)
    return float(max(strengths, key=mean_auc))


def check_shares(cfg: QualityConfig) -> None:
    """Refuses a ``quality.*`` share outside [0, 1), naming the key."""
    for key in ("max_withheld_gradable", "max_rejected_fundus"):
        value = getattr(cfg, key)
        if not 0 <= value < 1:
            raise ConfigError(
                f"quality.{key}={value}: a share of validation scans, at least 0 and below 1 "
                "(0.01: at most 1% of them)."
            )


def fit_gate(train: dict, val: dict, cfg: QualityConfig) -> GateParams:
    """The gate fitted on training scans, its thresholds chosen on validation scans.

    Args:
        train, val: ``features`` (n, width), ``measures`` (n, measures) and ``gradable``
            (n,) 0/1, the graders' label.
        cfg: ``quality.*``.
    """
    check_shares(cfg)
    width = train["features"].shape[1]
    components = gate_components(width, cfg)
    params = GateParams.empty(width, components)
    mean, axes, variances, residual = principal_axes(train["features"], components)
    m_mean, m_precision, m_scale = measure_statistics(train["measures"])
    params.feature_mean, params.feature_axes = mean, axes
    params.feature_variances, params.residual_variance = variances, np.float32(residual)
    params.measure_mean, params.measure_precision, params.measure_scale = (
        m_mean,
        m_precision,
        m_scale,
    )
    feature_d, measure_d, inputs = distances(params, train["features"], train["measures"])
    params.distance_scales = np.array(
        [np.quantile(feature_d, TRAIN_QUANTILE), np.quantile(measure_d, TRAIN_QUANTILE)]
    )
    params = GateParams.from_dict(params.as_dict())  # float32 from here, as the verdict
    val_feature_d, val_measure_d, val_inputs = distances(params, val["features"], val["measures"])
    params.novelty_threshold = np.float32(
        novelty_threshold(params, val_feature_d, val_measure_d, cfg)
    )
    params.fitted = np.float32(1)
    score = fit_score(inputs, train["gradable"])
    if score is not None:
        params.score_weights = score[0].astype(np.float32)
        params.score_bias = np.float32(score[1])
        params.score_threshold = np.float32(
            score_threshold(params, val_inputs, val["gradable"], cfg)
        )
        params.score_fitted = np.float32(1)
    return params


def conformal_rank(count: int, share: float) -> int:
    """The rank from the extreme of the threshold among ``count`` validation scores so that
    a new scan lies beyond it with probability at most ``share`` (split conformal: a new
    exchangeable scan lies beyond the ``floor((count + 1) x share)``-th most extreme score
    with probability at most that rank over count + 1). 0 when there are too few scans
    for that promise: then nothing is withheld by the threshold."""
    return int(np.floor((count + 1) * share))


def can_hold_a_share(validation: int, gradable: int, cfg: QualityConfig) -> bool:
    """Whether validation has scans enough for either threshold (``conformal_rank`` > 0);
    when it has not, the run keeps the rules alone, unfitted, and reads no features."""
    return (
        conformal_rank(validation, cfg.max_rejected_fundus) > 0
        or conformal_rank(gradable, cfg.max_withheld_gradable) > 0
    )


def _too_few(what: str, count: int, share: float) -> None:
    log.warning(
        "Quality gate: %d validation scans are too few to hold the %s to %.1f%% (it needs "
        "%d): it withholds nothing. Raise the share (quality.*) or validate on more scans.",
        count,
        what,
        100 * share,
        int(np.ceil(1 / share)) - 1 if share else 0,
    )


def novelty_threshold(
    params: GateParams, feature_d: np.ndarray, measure_d: np.ndarray, cfg: QualityConfig
) -> float:
    """The not-a-fundus threshold on validation's ``distances``: a new fundus scan like
    validation's is rejected with probability at most ``max_rejected_fundus``
    (``conformal_rank``), and so at most that share of validation's own scans is."""
    scales = params.distance_scales.astype(np.float32)
    novelty = np.sort(np.maximum(feature_d / scales[0], measure_d / scales[1]))
    rank = conformal_rank(len(novelty), cfg.max_rejected_fundus)
    if rank == 0:
        _too_few("not-a-fundus distance", len(novelty), cfg.max_rejected_fundus)
        return float("inf")
    return float(novelty[-rank])


def score_threshold(
    params: GateParams, inputs: np.ndarray, gradable: np.ndarray, cfg: QualityConfig
) -> float:
    """The learnt score's threshold (a score below it is withheld) on validation's score
    ``inputs`` and graders' labels: a new gradable scan like validation's is withheld with
    probability at most ``max_withheld_gradable`` (``conformal_rank``), and so at most that
    share of validation's own gradable scans is."""
    scores = learnt_score(params.as_dict(), tf.constant(inputs)).numpy()
    gradable = np.sort(scores[np.asarray(gradable) == 1])
    rank = conformal_rank(len(gradable), cfg.max_withheld_gradable)
    if rank == 0:
        _too_few("learnt score", len(gradable), cfg.max_withheld_gradable)
        return 0.0  # no score is below it
    return float(gradable[rank - 1])


def fit_run_gate(model, rows: dict, cfg: QualityConfig, batch_size: int = 64) -> dict:
    """The gate of ``model`` fitted on a run's scans, as ``GateParams.as_dict()``.

    Args:
        model: the model as it will be saved (its weight averages applied, if any).
        rows: ``train`` and ``val`` manifest rows and ``ungradable`` (the graders'
            ungradable scans of both, ``retina.data.prepare.prepare_ungradable``), each
            with a ``cache_path``.
        cfg: ``quality.*``; ``fit_scans`` caps the graded training scans read.
    """
    graded = rows["train"] if not cfg.fit_scans else rows["train"].head(cfg.fit_scans)
    ungradable = rows["ungradable"]
    validation = len(rows["val"]) + int((ungradable["split"] == "val").sum())
    if not can_hold_a_share(validation, len(rows["val"]), cfg):
        # Neither threshold could withhold anything: spare reading every scan each epoch.
        _too_few("quality gate's shares", validation, cfg.max_rejected_fundus)
        return unfitted_gate(model, cfg)
    signals = {}
    for split, part in (("train", graded), ("val", rows["val"])):
        extra = ungradable[ungradable["split"] == split]
        paths = [*part["cache_path"], *extra["cache_path"]]
        signals[split] = scan_signals(model, paths, batch_size)
        signals[split]["gradable"] = np.r_[np.ones(len(part)), np.zeros(len(extra))]
    params = fit_gate(signals["train"], signals["val"], cfg)
    log.info(
        "Quality gate fitted on %d training scans (%d ungradable)%s.",
        len(signals["train"]["gradable"]),
        int((signals["train"]["gradable"] == 0).sum()),
        "" if params.score_fitted else "; no learnt score: no ungradable training scan",
    )
    return params.as_dict()


def unfitted_gate(model, cfg: QualityConfig) -> dict:
    """The unfitted gate of ``model`` (its shapes), as the training state first holds it;
    its shares checked before any training step."""
    check_shares(cfg)
    return unfitted_params(pooled_width(model), cfg).as_dict()

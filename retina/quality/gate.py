"""The gate's state and its verdict on a batch, in TensorFlow: one function that predict,
evaluate, explain and the exported SavedModel all run, so they agree on every scan.

A verdict is, in this order:
    ungradable "no field of view"   the field of view covers under a tenth of the circle
                                    (the floor: whatever else is said of the scan)
    not_fundus                      the pooled features or the image measures are further
                                    from the training scans' than the threshold chosen on
                                    validation (``quality.max_rejected_fundus``)
    ungradable (reasons)            "too dark", "too blurred" (the rules), or "low quality
                                    score" (the learnt score below its threshold)
    gradable                        otherwise
A checkpoint without the fitted state (a run from before the gate, or ``quality.enabled``
off) gets the rules only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import tensorflow as tf

from retina.config import QualityConfig
from retina.quality.measures import BRIGHTNESS, FIELD, GATE_SIZE, MEASURES, SHARPNESS

GRADABLE, UNGRADABLE, NOT_FUNDUS = "gradable", "ungradable", "not_fundus"
VERDICTS = (GRADABLE, UNGRADABLE, NOT_FUNDUS)  # the int codes of the SavedModel's output
MIN_FIELD = 0.1  # retina.data.fundus.gradability_flags' "no field of view"
# The bits of ``quality_flags``, and the reason each names.
REASONS = (
    "no field of view",
    "too dark",
    "too blurred",
    "low quality score",
    "features unlike the training scans",
    "image unlike a fundus photograph",
)
NO_FIELD, DARK, BLURRED, LOW_SCORE, FEATURES_FAR, IMAGE_FAR = (1 << i for i in range(6))


@dataclass
class GateParams:
    """What training fits (all numpy, float32), stored in the checkpoint under ``quality/``.

    ``fitted`` 0 means nothing was fitted (rules only); ``score_fitted`` 0 means the learnt
    score could not be (no ungradable training scan), and it never withholds.
    """

    fitted: np.ndarray  # ()
    score_fitted: np.ndarray  # ()
    feature_mean: np.ndarray  # (width,)
    feature_axes: np.ndarray  # (components, width), orthonormal rows
    feature_variances: np.ndarray  # (components,)
    residual_variance: np.ndarray  # () mean squared residual off the axes, training scans
    measure_mean: np.ndarray  # (measures,)
    measure_precision: np.ndarray  # (measures, measures)
    measure_scale: np.ndarray  # (measures,) their standard deviations, training scans
    distance_scales: np.ndarray  # (2,) training 99th percentiles: features, measures
    novelty_threshold: np.ndarray  # () chosen on validation
    score_weights: np.ndarray  # (components + measures,) on standardized inputs
    score_bias: np.ndarray  # ()
    score_threshold: np.ndarray  # () chosen on validation

    @classmethod
    def empty(cls, width: int, components: int) -> GateParams:
        """The unfitted state of a model with ``width`` pooled features."""
        measures, zeros = len(MEASURES), np.zeros
        return cls(
            fitted=np.float32(0),
            score_fitted=np.float32(0),
            feature_mean=zeros(width, np.float32),
            feature_axes=zeros((components, width), np.float32),
            feature_variances=np.ones(components, np.float32),
            residual_variance=np.float32(1),
            measure_mean=zeros(measures, np.float32),
            measure_precision=np.eye(measures, dtype=np.float32),
            measure_scale=np.ones(measures, np.float32),
            distance_scales=np.ones(2, np.float32),
            novelty_threshold=np.float32(np.inf),
            score_weights=zeros(components + measures, np.float32),
            score_bias=np.float32(0),
            score_threshold=np.float32(0),
        )

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name), np.float32) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> GateParams:
        return cls(**{f.name: np.asarray(values[f.name], np.float32) for f in fields(cls)})


def gate_components(width: int, cfg: QualityConfig) -> int:
    """Principal components the gate keeps of ``width`` pooled features."""
    return max(1, min(cfg.components, width))


def unfitted_params(width: int, cfg: QualityConfig) -> GateParams:
    """The unfitted gate (the rules alone) of a model with ``width`` pooled features."""
    return GateParams.empty(width, gate_components(width, cfg))


def learnt_score(params: dict, inputs: tf.Tensor) -> tf.Tensor:
    """P(gradable) of the score's (batch, inputs): whitened features and standardized
    measures."""
    return tf.sigmoid(tf.linalg.matvec(inputs, params["score_weights"]) + params["score_bias"])


def feature_distance(params: dict, features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(squared Mahalanobis distance in the principal axes plus the scaled squared residual
    off them, the whitened coordinates) of (batch, width) features."""
    centred = features - params["feature_mean"]
    coordinates = tf.matmul(centred, params["feature_axes"], transpose_b=True)
    residual = centred - tf.matmul(coordinates, params["feature_axes"])
    whitened = coordinates / tf.sqrt(params["feature_variances"])
    distance = tf.reduce_sum(tf.square(whitened), 1) + tf.reduce_sum(
        tf.square(residual), 1
    ) / tf.maximum(params["residual_variance"], 1e-12)
    return distance, whitened


def measure_distance(params: dict, measures: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(squared Mahalanobis distance of the image measures, their standardized values)."""
    centred = measures - params["measure_mean"]
    distance = tf.reduce_sum(tf.matmul(centred, params["measure_precision"]) * centred, 1)
    return distance, centred / params["measure_scale"]


def gate_batch(params: dict, rules: dict, features: tf.Tensor, measures: tf.Tensor) -> dict:
    """The verdict of a batch: ``quality`` (int code of VERDICTS), ``quality_flags`` (bits
    of REASONS), ``quality_score`` (learnt P(gradable), nan unfitted) and
    ``fundus_distance`` (novelty over its threshold's scale, nan unfitted).

    Args:
        params: ``GateParams.as_dict()`` as float32 tensors or arrays.
        rules: ``min_brightness``, ``min_sharpness`` and ``sharpness_rule`` (whether the
            scans are large enough for it, ``preprocess.image_size >= GATE_SIZE``).
        features: (batch, width) pooled features, float32.
        measures: (batch, len(MEASURES)) ``retina.quality.measures.image_measures``.
    """
    fitted, score_fitted = params["fitted"] > 0, params["score_fitted"] > 0
    feature_d, whitened = feature_distance(params, features)
    measure_d, standardized = measure_distance(params, measures)
    scales = params["distance_scales"]
    feature_far = feature_d / scales[0] > params["novelty_threshold"]
    image_far = measure_d / scales[1] > params["novelty_threshold"]
    novelty = tf.maximum(feature_d / scales[0], measure_d / scales[1])
    inputs = tf.concat([whitened, standardized], 1)
    score = learnt_score(params, inputs)
    no_field = measures[:, FIELD] < MIN_FIELD
    dark = measures[:, BRIGHTNESS] * 255.0 < rules["min_brightness"]
    blurred = (measures[:, SHARPNESS] < rules["min_sharpness"]) & rules["sharpness_rule"]
    low = score_fitted & (score < params["score_threshold"])
    conditions = (no_field, dark, blurred, low, fitted & feature_far, fitted & image_far)
    flags = tf.add_n([tf.cast(c, tf.int32) * (1 << i) for i, c in enumerate(conditions)])
    not_fundus = ~no_field & fitted & (feature_far | image_far)
    ungradable = no_field | dark | blurred | low
    code = tf.where(no_field, 1, tf.where(not_fundus, 2, tf.where(ungradable, 1, 0)))
    nan = tf.fill(tf.shape(score), math.nan)
    return {
        "quality": tf.cast(code, tf.int32),
        "quality_flags": flags,
        "quality_score": tf.where(score_fitted, score, nan),
        "fundus_distance": tf.where(
            fitted & tf.math.is_finite(params["novelty_threshold"]),
            novelty / params["novelty_threshold"],
            nan,
        ),
    }


def rule_settings(cfg: QualityConfig, image_size: int) -> dict:
    """The rules' thresholds, as ``gate_batch`` takes them."""
    return {
        "min_brightness": float(cfg.min_brightness),
        "min_sharpness": float(cfg.min_sharpness),
        "sharpness_rule": bool(image_size >= GATE_SIZE),
    }


def reasons_of(flags: int, verdict: str) -> str:
    """The reasons a verdict names, "; "-joined ("" for a gradable scan)."""
    if verdict == GRADABLE:
        return ""
    wanted = (
        (FEATURES_FAR, IMAGE_FAR) if verdict == NOT_FUNDUS else (NO_FIELD, DARK, BLURRED, LOW_SCORE)
    )
    if flags & NO_FIELD:
        wanted = (NO_FIELD,)
    return "; ".join(REASONS[bit.bit_length() - 1] for bit in wanted if flags & bit)

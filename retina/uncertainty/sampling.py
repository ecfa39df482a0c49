"""Sampled predictions, the raw material of predictive uncertainty (``retina.metrics
.uncertainty``): MC dropout, test-time augmentation views and ensemble members, each a
stack of class probabilities of shape (samples, scans, classes).

MC dropout samples the head's dropout (``head_dropout``, in front of the logits of every
model here): the backbone runs once per scan in inference mode (BatchNorm statistics
fixed, its own stochastic depth off) and only the head is sampled. Each scan's masks come
from a stateless generator seeded by the scan's pixels (``tf.fingerprint`` of the uint8
image) and the sample number, so a scan gets the same samples in any batch, in
``evaluate``, ``predict`` and the exported SavedModel.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from retina.data.pipeline import make_eval_dataset
from retina.icdr import REFERABLE_MIN_GRADE
from retina.inference.outputs import FLIPS, predict_dataset, predict_probabilities
from retina.metrics.calibration import PLATT_CLIP
from retina.models.grading import grading_of
from retina.models.heads import DROPOUT_LAYER, LOGITS_LAYER, pooled_features_model


def scan_seeds(images: tf.Tensor) -> tf.Tensor:
    """One int64 per scan from its pixels (farmhash of the uint8 image)."""
    fingerprints = tf.fingerprint(tf.cast(images, tf.uint8))  # (batch, 8) uint8
    return tf.bitcast(fingerprints, tf.int64)


def mc_dropout_probabilities(model: keras.Model, samples: int, seed: int = 0):
    """A function ``images -> (samples, batch, classes)`` of grade probabilities with the
    head's dropout active; all samples equal when the model's dropout rate is 0."""
    features_of = pooled_features_model(model)
    rate = float(model.get_layer(DROPOUT_LAYER).rate)
    outputs_of, grading = model.get_layer(LOGITS_LAYER), grading_of(model)

    def sample(images):
        features = tf.cast(features_of(images, training=False), tf.float32)
        width = features.shape[-1]
        seeds = tf.stack(
            [scan_seeds(images), tf.fill([tf.shape(images)[0]], tf.cast(seed, tf.int64))], 1
        )
        noise = tf.map_fn(
            lambda pair: tf.random.stateless_uniform([samples, width], pair),
            seeds,
            fn_output_signature=tf.float32,
        )  # (batch, samples, width)
        kept = tf.cast(noise >= rate, tf.float32) / (1.0 - rate) if rate else tf.ones_like(noise)
        dropped = features[:, None, :] * kept
        probabilities = grading.probabilities(outputs_of(tf.reshape(dropped, [-1, width])))
        probabilities = tf.reshape(probabilities, [-1, samples, probabilities.shape[-1]])
        return tf.transpose(probabilities, [1, 0, 2])

    return sample


def flip_probabilities(model: keras.Model):
    """``images -> (4, batch, classes)``: the grade probabilities of each of the four flips."""
    grading = grading_of(model)

    def sample(images):
        return tf.stack(
            [grading.probabilities(model(flip(images), training=False)) for flip in FLIPS]
        )

    return sample


def sampled_probabilities(sample, cache_paths: list[str], batch_size: int) -> np.ndarray:
    """(samples, scans, classes) over cached scans, in order."""
    dataset = make_eval_dataset(list(cache_paths), [0] * len(cache_paths), batch_size)
    by_scan = tf.function(lambda images: tf.transpose(sample(images), [1, 0, 2]))
    batches = -(-len(cache_paths) // batch_size)  # for the progress bar
    return predict_dataset(by_scan, dataset, batches)[1].transpose(1, 0, 2)


def sample_scans(
    models: list, cache_paths: list[str], method: str, samples: int, batch_size: int, tta: bool
) -> np.ndarray:
    """(samples, scans, classes) for ``uncertainty.method``: one per ensemble member (each
    with ``tta`` if asked), ``samples`` MC-dropout passes, the four flips, or (``none``) the
    one prediction, TTA-averaged if asked."""
    if method == "ensemble":
        return np.stack([predict_probabilities(m, cache_paths, batch_size, tta) for m in models])
    (model,) = models
    if method == "mc_dropout":
        return sampled_probabilities(
            mc_dropout_probabilities(model, samples), cache_paths, batch_size
        )
    if method == "tta":
        return sampled_probabilities(flip_probabilities(model), cache_paths, batch_size)
    return predict_probabilities(model, cache_paths, batch_size, tta)[None]


def sampler(model: keras.Model, method: str, samples: int):
    """``images -> (samples, batch, classes)`` for a single-run method (export uses it)."""
    if method == "mc_dropout":
        return mc_dropout_probabilities(model, samples)
    if method == "tta":
        return flip_probabilities(model)
    grading = grading_of(model)
    return lambda images: grading.probabilities(model(images, training=False))[None]


def tf_entropy(probabilities: tf.Tensor) -> tf.Tensor:
    """Entropy in nats over the last axis (0 log 0 = 0), as ``scipy.stats.entropy``."""
    return -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(probabilities), probabilities), -1)


def tf_referable_uncertainty(samples: tf.Tensor, measure: str, platt: dict | None = None):
    """``retina.metrics.uncertainty``'s referable ``measure`` from (S, batch, 5) samples,
    of probabilities recalibrated with ``platt`` when given."""
    if samples.shape[-1] > 2:
        referable = tf.reduce_sum(samples[..., REFERABLE_MIN_GRADE:], -1)
    else:  # a referable head: (not referable, referable)
        referable = samples[..., 1]
    if platt:
        clipped = tf.clip_by_value(referable, PLATT_CLIP, 1.0 - PLATT_CLIP)
        log_odds = tf.math.log(clipped) - tf.math.log1p(-clipped)
        referable = tf.sigmoid(platt["slope"] * log_odds + platt["intercept"])
    bernoulli = tf.stack([1.0 - referable, referable], -1)
    predictive = tf_entropy(tf.reduce_mean(bernoulli, 0))
    expected = tf.reduce_mean(tf_entropy(bernoulli), 0)
    return {
        "predictive_entropy": predictive,
        "expected_entropy": expected,
        "mutual_information": tf.maximum(predictive - expected, 0.0),
    }[measure]

"""Saliency maps: where on the preprocessed scan a model found the evidence for a score.

``grad_cam`` (Selvaraju et al. 2017) differentiates the score with respect to the model's
last feature map: the input of the head's pooling (``retina.models.heads.POOL_LAYER``), which
is the backbone's output for the keras.applications models. The feature map comes from a
model cut at that point of the outer graph; the head (pooling, then the logits layer) is
applied by hand in float32 on a tape. Nothing is cut out of a nested backbone, which fails
in Keras 3 with "Graph disconnected" (keras #16123, #19374), and a float16 feature map of a
mixed-precision model is differentiated in float32.

``occlusion`` (Zeiler and Fergus 2014) is the comparison that needs no gradient: how much the
score falls when a square of the scan is replaced by a blurred copy of the same place (a
blur removes lesions but keeps the fundus colour; a black square would look like a
haemorrhage to a DR model).

A map is (height, width) float32 >= 0 on the model's input frame; larger is more evidence.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from skimage.filters import gaussian

from retina.errors import ConfigError
from retina.icdr import NUM_GRADES, REFERABLE_MIN_GRADE
from retina.models.grading import Grading, grading_of
from retina.models.heads import feature_map_of, logits_from_pooled, pool_feature_map, pooling_of

REFERABLE = "referable"
OCCLUSION_BATCH = 64  # occluded copies scored at a time


def check_target(target: str, model: keras.Model) -> str:
    """``referable``, or an ICDR grade where the model has a logit per grade (a softmax
    head)."""
    per_grade = grading_of(model).head == "softmax" and model.output_shape[-1] == NUM_GRADES
    if target == REFERABLE or (per_grade and target in map(str, range(NUM_GRADES))):
        return target
    grades = f" or a grade 0-{NUM_GRADES - 1}" if per_grade else ""
    raise ConfigError(
        f"explain target={target!r}: explain '{REFERABLE}'{grades} (only model.head=softmax "
        "has a logit per grade)."
    )


def target_score(outputs: tf.Tensor, target: str, grading: Grading) -> tf.Tensor:
    """One score per scan: the referable log-odds, or a grade's logit."""
    if target != REFERABLE:
        return outputs[:, int(target)]
    if grading.ordinal:  # log-odds of P(grade > 1)
        referable = tf.clip_by_value(grading.cumulative(outputs)[:, 1], 1e-7, 1 - 1e-7)
        return tf.math.log(referable) - tf.math.log1p(-referable)
    if outputs.shape[-1] == 2:
        return outputs[:, 1] - outputs[:, 0]
    referable = tf.reduce_logsumexp(outputs[:, REFERABLE_MIN_GRADE:], axis=-1)
    return referable - tf.reduce_logsumexp(outputs[:, :REFERABLE_MIN_GRADE], axis=-1)


def feature_map_model(model: keras.Model) -> keras.Model:
    """``images -> last feature map``, cut in the outer graph at the head's pooling."""
    return keras.Model(model.input, feature_map_of(model))


def grad_cam_function(model: keras.Model, target: str):
    """A ``tf.function`` ``uint8 images -> (batch, height, width)`` Grad-CAM maps."""
    check_target(target, model)
    features_of, pooling = feature_map_model(model), pooling_of(model)
    logits_of, grading = logits_from_pooled(model), grading_of(model)

    @tf.function
    def maps(images):
        feature_map = tf.cast(features_of(images, training=False), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(feature_map)
            pooled = pool_feature_map(feature_map, pooling)  # the head's dropout: off
            logits = tf.cast(logits_of(pooled), tf.float32)
            score = target_score(logits, target, grading)
        channel_weights = tf.reduce_mean(tape.gradient(score, feature_map), axis=[1, 2])
        cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", feature_map, channel_weights))
        size = tf.shape(images)[1:3]
        return tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]

    return maps


def grad_cam(model: keras.Model, images: np.ndarray, target: str = REFERABLE) -> np.ndarray:
    """(batch, height, width) Grad-CAM maps of uint8 ``images``."""
    return grad_cam_function(model, target)(tf.constant(images, tf.uint8)).numpy()


def occlusion(
    model: keras.Model, image: np.ndarray, target: str = REFERABLE, patches: int = 8
) -> np.ndarray:
    """(height, width) fall of the score when each square (a ``patches``-th of the side,
    moved by half its size) is blurred out, averaged over the squares covering a pixel."""
    check_target(target, model)
    size = image.shape[0]
    patch = max(size // patches, 2)
    stride = max(patch // 2, 1)
    blurred = gaussian(image, sigma=patch / 2, channel_axis=-1, preserve_range=True)
    blurred = blurred.round().astype(np.uint8)
    corners = [
        (y, x)
        for y in range(0, size - patch + 1, stride)
        for x in range(0, size - patch + 1, stride)
    ]
    copies = np.repeat(image[None], len(corners), axis=0)
    for copy, (y, x) in zip(copies, corners, strict=True):
        copy[y : y + patch, x : x + patch] = blurred[y : y + patch, x : x + patch]
    scores = _scores(model, np.concatenate([image[None], copies]), target)
    fall, covered = np.zeros(image.shape[:2], np.float32), np.zeros(image.shape[:2], np.float32)
    for drop, (y, x) in zip(scores[0] - scores[1:], corners, strict=True):
        fall[y : y + patch, x : x + patch] += drop
        covered[y : y + patch, x : x + patch] += 1
    return np.maximum(fall / np.maximum(covered, 1), 0)


def _scores(model: keras.Model, images: np.ndarray, target: str) -> np.ndarray:
    grading = grading_of(model)
    chunks = [
        target_score(
            tf.cast(model(images[i : i + OCCLUSION_BATCH], training=False), tf.float32),
            target,
            grading,
        )
        for i in range(0, len(images), OCCLUSION_BATCH)
    ]
    return tf.concat(chunks, 0).numpy()


def read_cached(cache_paths: list[str]) -> np.ndarray:
    """(scans, size, size, 3) uint8: the preprocessed scans the model sees."""
    return np.stack(
        [tf.io.decode_image(tf.io.read_file(p), channels=3).numpy() for p in cache_paths]
    )


def saliency_function(model: keras.Model, method: str, target: str, batch: int = 32):
    """``images -> (scans, size, size)`` maps of ``method`` for ``target`` (Grad-CAM traced
    once, then run ``batch`` scans at a time)."""
    if method == "occlusion":
        return lambda images: np.stack([occlusion(model, image, target) for image in images])
    maps = grad_cam_function(model, target)
    return lambda images: np.concatenate(
        [maps(tf.constant(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    )


def saliency_maps(model: keras.Model, images: np.ndarray, method: str, target: str):
    """(scans, size, size) maps of ``method`` for ``target``."""
    return saliency_function(model, method, target)(images)

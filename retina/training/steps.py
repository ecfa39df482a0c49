"""The compiled train and predict steps."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def make_train_step(model: keras.Model, optimizers: dict, groups: dict):
    """A ``tf.function`` doing one GradientTape step; returns (loss, accuracy).

    Each optimizer updates its own variable group. ``scale_loss`` multiplies by that
    optimizer's loss scale under a LossScaleOptimizer (identity otherwise), and ``apply``
    unscales, skips non-finite steps and updates the scale; with two optimizers each keeps
    its own scale, so the tape is persistent and asked once per optimizer.
    """
    names = list(optimizers)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape(persistent=len(names) > 1) as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            scaled = [optimizers[name].scale_loss(loss) for name in names]
        for name, scaled_loss in zip(names, scaled, strict=True):
            gradients = tape.gradient(scaled_loss, groups[name])
            optimizers[name].apply(gradients, groups[name])
        hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)
        return loss, tf.reduce_mean(tf.cast(hits, tf.float32))

    return train_step


def make_predict_step(model: keras.Model):
    @tf.function
    def predict_step(images):
        return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))

    return predict_step


def predict_dataset(predict_step, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Runs a finite (images, grades) dataset through the model: (grades, probabilities)."""
    grades, probabilities = [], []
    for images, labels in dataset:
        probabilities.append(predict_step(images).numpy())
        grades.append(labels.numpy())
    return np.concatenate(grades), np.concatenate(probabilities)

"""What a model's outputs become: predict steps giving grade probabilities (with the
test-time flips), run over a finite dataset or over cached scans, and the probability
columns of prediction tables."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from retina.data.pipeline import make_eval_dataset
from retina.icdr import NUM_GRADES
from retina.metrics.rates import referable_probability
from retina.models.grading import Grading, grading_of

# The test-time augmentation views: the scan and its three flips.
FLIPS = (
    lambda x: x,
    lambda x: tf.reverse(x, [2]),
    lambda x: tf.reverse(x, [1]),
    lambda x: tf.reverse(x, [1, 2]),
)


def make_predict_step(model: keras.Model, tta: bool = False):
    """Grade probabilities of a batch (``grading_of(model)``); with ``tta``, averaged over
    the four flips."""
    views, grading = (FLIPS if tta else FLIPS[:1]), grading_of(model)

    @tf.function
    def predict_step(images):
        outputs = [grading.probabilities(model(view(images), training=False)) for view in views]
        return tf.add_n(outputs) / len(outputs)

    return predict_step


def make_output_step(model: keras.Model):
    """The model's own float32 outputs of a batch, before any grading (training's validation
    fits the grading on them)."""
    return tf.function(lambda images: tf.cast(model(images, training=False), tf.float32))


def predict_dataset(
    predict_step, dataset: tf.data.Dataset, batches: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Runs a finite (images, grades) dataset through the model: (grades, probabilities).
    With ``batches`` (their number), a progress bar shows the rate and the time left."""
    grades, probabilities = [], []
    bar = tqdm(
        total=batches,
        desc="scoring",
        unit="batch",
        mininterval=1.0,
        leave=False,
        disable=not batches,
    )
    for images, labels in dataset:
        probabilities.append(predict_step(images).numpy())
        grades.append(labels.numpy())
        bar.update(1)
    bar.close()
    return np.concatenate(grades), np.concatenate(probabilities)


def predict_probabilities(
    model: keras.Model,
    cache_paths: list[str],
    batch_size: int,
    tta: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Softmax outputs per cached scan, in order; with ``tta``, averaged over the four flips;
    with ``progress``, a bar with the rate and the time left."""
    if not cache_paths:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    dataset = make_eval_dataset(list(cache_paths), [0] * len(cache_paths), batch_size)
    batches = -(-len(cache_paths) // batch_size) if progress else None
    return predict_dataset(make_predict_step(model, tta), dataset, batches)[1]


def output_columns(num_outputs: int) -> list[str]:
    """Names of the model's probability columns in prediction tables."""
    if num_outputs == NUM_GRADES:
        return [f"prob_grade_{g}" for g in range(NUM_GRADES)]
    return ["prob_not_referable", "prob_referable"]


def probability_columns(probabilities: np.ndarray, grading: Grading) -> pd.DataFrame:
    """The model's probabilities, predicted grade (or class, by ``grading``'s call) and
    referable probability."""
    table = pd.DataFrame(probabilities, columns=output_columns(probabilities.shape[1]))
    table["predicted_grade"] = grading.predicted_grades(probabilities)
    table["referable_probability"] = referable_probability(probabilities)
    return table

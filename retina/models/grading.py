"""What each ``model.head``'s outputs mean as a grade: grade probabilities, the grade call
and the referable probability, the same in training's validation, evaluation, prediction
and the exported SavedModel.

    softmax     5 logits; softmax probabilities; the grade is the most probable one
    referable   2 logits (not referable, referable); softmax; the call is the likelier one
    coral       4 logits sharing one weight vector, one bias each (Cao, Mirjalili, Raschka
                2020): P(grade > k) = sigmoid(logit_k)
    corn        4 logits of conditional tasks (Shi, Cao, Raschka 2023): P(grade > k | grade
                > k - 1) = sigmoid(logit_k), so P(grade > k) is their running product
    regression  1 output r, the grade as a number: P(grade > k) = sigmoid(slope * (r - k -
                0.5) + shift), the logistic of the referable boundary (fitted on validation:
                ``metrics.calibration.fit_logistic`` of grade >= 2 on r) moved to each grade
                boundary; monotone in r

For the ordinal heads (coral, corn, regression) the cumulative probabilities P(grade > k),
k = 0..3, are made non-increasing in k (a running minimum: CORAL's biases can cross while it
trains), the grade probabilities are their differences, and the grade call cuts the expected
grade, sum_k P(grade > k), at four cut-points: 0.5, 1.5, 2.5, 3.5 (``grading.thresholds=fixed``)
or those fitted on validation to maximise quadratic weighted kappa (``fitted``,
``metrics.cut_points``). The referable probability is P(grade >= 2) for every grading head.

A model carries its grading (``grading_of``): ``build_model`` gives it its head's rule, a
restore the values its checkpoint holds, training the values of its latest validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from retina.icdr import GRADE_BOUNDARIES, NUM_GRADES, grades_at

ORDINAL_HEADS = ("coral", "corn", "regression")
# The regression link before a validation fitted one: P(grade > k) = sigmoid(4 (r - k - 0.5)).
DEFAULT_LINK = (4.0, 0.0)


@dataclass(frozen=True)
class Grading:
    """A head and the values that turn its outputs into grades: the cut-points of the grade
    call (ordinal heads) and the regression link (slope, shift)."""

    head: str = "softmax"
    cut_points: tuple[float, ...] = GRADE_BOUNDARIES
    link: tuple[float, float] = DEFAULT_LINK

    @property
    def ordinal(self) -> bool:
        return self.head in ORDINAL_HEADS

    def probabilities(self, outputs: tf.Tensor) -> tf.Tensor:
        """The head's float32 outputs (batch, outputs) as grade probabilities (batch, 5), or
        (batch, 2) for the referable head."""
        outputs = tf.cast(outputs, tf.float32)
        if not self.ordinal:
            return tf.nn.softmax(outputs)
        return grade_probabilities(self.cumulative(outputs))

    def cumulative(self, outputs: tf.Tensor) -> tf.Tensor:
        """P(grade > k) for k = 0..3, non-increasing in k: (batch, 4)."""
        if self.head == "coral":
            above = tf.sigmoid(outputs)
        elif self.head == "corn":
            above = tf.math.cumprod(tf.sigmoid(outputs), axis=1)
        else:
            slope, shift = self.link
            above = tf.sigmoid(slope * (outputs - tf.constant(GRADE_BOUNDARIES)) + shift)
        columns = tf.unstack(above, axis=1)
        for k in range(1, len(columns)):
            columns[k] = tf.minimum(columns[k], columns[k - 1])
        return tf.stack(columns, axis=1)

    def predicted_grades(self, probabilities: np.ndarray) -> np.ndarray:
        """The grade call of each row of grade probabilities (numpy)."""
        probabilities = np.asarray(probabilities)
        if not self.ordinal:
            return probabilities.argmax(axis=1)
        return grades_at(expected_grades(probabilities), self.cut_points)

    def tf_predicted_grades(self, probabilities: tf.Tensor) -> tf.Tensor:
        """``predicted_grades`` as TensorFlow ops (the exported SavedModel's graph)."""
        if not self.ordinal:
            return tf.argmax(probabilities, axis=1, output_type=tf.int32)
        expected = tf.linalg.matvec(probabilities, tf.range(NUM_GRADES, dtype=tf.float32))
        above = expected[:, None] > tf.constant(self.cut_points, tf.float32)[None, :]
        return tf.reduce_sum(tf.cast(above, tf.int32), axis=1)


def grade_probabilities(cumulative: tf.Tensor) -> tf.Tensor:
    """(batch, 5) grade probabilities from non-increasing P(grade > k), (batch, 4)."""
    ones = tf.ones_like(cumulative[:, :1])
    zeros = tf.zeros_like(cumulative[:, :1])
    at_least = tf.concat([ones, cumulative], axis=1)  # P(grade >= k), k = 0..4
    return at_least - tf.concat([cumulative, zeros], axis=1)


def expected_grades(probabilities: np.ndarray) -> np.ndarray:
    """sum_k k p_k = sum_k P(grade > k): the score an ordinal head's grade call cuts."""
    return np.asarray(probabilities) @ np.arange(NUM_GRADES)


def grading_record(grading: Grading) -> dict:
    """The grading as reports give it: the head, how it calls a grade, and its values."""
    if not grading.ordinal:
        return {"head": grading.head, "grade_call": "the most probable class"}
    record = {
        "head": grading.head,
        "grade_call": "the expected grade cut at the cut-points",
        "cut_points": list(grading.cut_points),
        "cut_points_fitted": grading.cut_points != GRADE_BOUNDARIES,  # moved by the fit
    }
    if grading.head == "regression":
        record["regression_link"] = list(grading.link)
    return record


def attach_grading(model, grading: Grading):
    """Gives ``model`` the grading its outputs are read with; returns the model."""
    model.grading = grading
    return model


def grading_of(model) -> Grading:
    """The grading a model was built, restored or trained with."""
    return model.grading


def ensemble_grading(gradings: list[Grading]) -> Grading:
    """The grade call of members averaged as one model: their head (which they must share)
    with their mean cut-points (each member's link has already made its probabilities)."""
    heads = {grading.head for grading in gradings}
    if len(heads) != 1:
        raise ValueError(
            f"ensemble members with different heads ({sorted(heads)}) cannot be averaged."
        )
    cut_points = np.mean([grading.cut_points for grading in gradings], axis=0)
    return Grading(gradings[0].head, tuple(float(c) for c in cut_points), gradings[0].link)

"""Serving artifacts from a run: ``export_run(run_dir, format)``.

``saved_model`` is a TensorFlow SavedModel whose ``serving_default`` signature takes
preprocessed uint8 scans and returns the grade probabilities, the grade call, the
referable probability and a referral decision per stored operating point; ``keras`` is a
``.keras`` file of the model alone. Both come with ``serving.json`` (the input contract,
the operating points and the grading that reads the model's outputs) and ``model_card.md``
(``retina.reports.model_card``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import tensorflow as tf

from retina.checkpoint.read import read_operating_points
from retina.config import ExportFormat, require_choice
from retina.errors import ConfigError
from retina.files import read_json, write_json
from retina.icdr import NUM_GRADES, REFERABLE_MIN_GRADE
from retina.inference.outputs import output_columns
from retina.inference.restore import load_run_model
from retina.models.grading import Grading, grading_of
from retina.models.heads import pooled_features_model
from retina.quality.gate import REASONS, VERDICTS, gate_batch
from retina.quality.measures import image_measures
from retina.quality.scoring import DECISION_COLUMN, Gate, load_gate
from retina.reports.model_card import write_model_card
from retina.run_dir import (
    EXPORT_DIR,
    KERAS_MODEL_FILE,
    REFERRAL_FILE,
    SAVED_MODEL_DIR,
    SERVING_FILE,
)
from retina.uncertainty.referral import REFER_COLUMN
from retina.uncertainty.sampling import sampler, tf_referable_uncertainty

log = logging.getLogger(__name__)


class ReferralModel(tf.Module):
    """The model plus its quality gate and referral rule, with one concrete serving
    signature: a scan the gate withholds gets no grade, no probability and no uncertainty
    (nan, or -1 for the grade), and its ``referred_*`` say the gate's action."""

    def __init__(
        self, model, thresholds: dict[str, float], image_size: int, policy: dict, gate: Gate
    ):
        super().__init__()
        self.model = model
        self.features_of = pooled_features_model(model)
        self.gate = gate.constants
        self.rules, self.action = gate.rules, str(gate.cfg.action)
        self.thresholds = {name: tf.constant(value) for name, value in thresholds.items()}
        self.policy = policy
        self.sample = sampler(model, policy["method"], policy["samples"])
        self.grading = grading_of(model)
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images):
        samples = self.sample(images)
        probabilities = tf.reduce_mean(samples, 0)
        if probabilities.shape[-1] == 2:
            referable = probabilities[:, 1]
        else:
            referable = tf.reduce_sum(probabilities[:, REFERABLE_MIN_GRADE:], axis=1)
        outputs = {
            "probabilities": probabilities,
            "predicted_grade": self.grading.tf_predicted_grades(probabilities),
            "referable_probability": referable,
        }
        for name, threshold in self.thresholds.items():
            outputs[f"referred_{name}"] = referable >= threshold
        uncertainty = tf_referable_uncertainty(
            samples, self.policy["measure"], self.policy.get("calibration")
        )
        outputs["uncertainty"] = uncertainty
        if "threshold" in self.policy:
            too_uncertain = uncertainty > tf.constant(self.policy["threshold"], tf.float32)
            outputs[REFER_COLUMN] = too_uncertain | outputs["referred_default"]
        return self._gated(images, outputs)

    def _gated(self, images, outputs: dict) -> dict:
        """``outputs`` with the gate's verdict, and emptied where it withholds the scan."""
        features = tf.cast(self.features_of(images, training=False), tf.float32)
        verdict = gate_batch(self.gate, self.rules, features, image_measures(images))
        held = verdict["quality"] != 0
        refers = tf.fill(tf.shape(held), self.action == "refer")
        gated = {}
        for name, value in outputs.items():
            if value.dtype == tf.bool:
                gated[name] = tf.where(held, refers, value)
            elif name == "predicted_grade":
                gated[name] = tf.where(held, tf.cast(-1, value.dtype), value)
            else:
                mask = tf.reshape(held, [-1] + [1] * (len(value.shape) - 1))
                gated[name] = tf.where(mask, tf.constant(float("nan"), value.dtype), value)
        names = tf.constant(list(VERDICTS))
        grade_decision = tf.where(outputs["referred_default"], "refer", "no_refer")
        return {
            **gated,
            **verdict,
            "quality_name": tf.gather(names, verdict["quality"]),
            DECISION_COLUMN: tf.where(held, tf.constant(self.action), grade_decision),
        }


def export_policy(run_dir: Path, checkpoint: str) -> dict:
    """The run's referral policy (refused when chosen for another checkpoint: its threshold
    and calibration belong to that one), or the softmax's predictive entropy without a
    threshold."""
    path = run_dir / REFERRAL_FILE
    if not path.is_file():
        return {"method": "none", "samples": 1, "measure": "predictive_entropy"}
    policy = read_json(path)
    if policy.get("checkpoint") != checkpoint:
        raise ConfigError(
            f"{path} was chosen on {policy.get('checkpoint')}'s validation predictions, not "
            f"{checkpoint}'s. Export checkpoint={policy.get('checkpoint')}, or choose a policy "
            f"for this one first: python -m retina.evaluate run_dir={run_dir} "
            f"checkpoint={checkpoint} split=val uncertainty.method={policy.get('method')}."
        )
    return policy


def serving_description(cfg, checkpoint: Path, thresholds: dict, grading: Grading) -> dict:
    size = cfg.preprocess.image_size
    return {
        "checkpoint": checkpoint.name,
        "model": cfg.model.name,
        "input": {
            "name": "images",
            "dtype": "uint8",
            "shape": [None, size, size, 3],
            "channels": "RGB",
            "note": (
                "Scans preprocessed as in training (retina.data.fundus.preprocess_fundus with "
                "the preprocess settings below): field of view cropped and resized to "
                f"{size}x{size}. The model scales pixel values itself."
            ),
            "preprocess": asdict(cfg.preprocess),
        },
        "outputs": {
            "probabilities": output_columns(2 if grading.head == "referable" else NUM_GRADES),
            "predicted_grade": "the grade call of the probabilities (see grading)",
            "referable_probability": f"P(ICDR grade >= {REFERABLE_MIN_GRADE})",
            "referred_<operating point>": "referable_probability >= threshold",
            "uncertainty": "the referral policy's measure of the referable decision "
            "(after the policy's Platt recalibration, when it has one)",
            REFER_COLUMN: "uncertainty > the policy's threshold, or referred_default",
            "quality": f"the quality gate's verdict as an int: {dict(enumerate(VERDICTS))}",
            "quality_name": "the verdict's name",
            "quality_flags": "bits of the reasons: "
            + ", ".join(f"{1 << i} {reason}" for i, reason in enumerate(REASONS)),
            "quality_score": "the learnt quality score, P(gradable) (nan: not fitted)",
            "fundus_distance": "distance to the training scans over the not_fundus threshold "
            "(> 1: not a fundus photograph; nan: not fitted)",
            DECISION_COLUMN: "refer or no_refer (referred_default) for a gradable scan; "
            "quality.action (retake or refer) for a withheld one",
            "withheld": "a scan whose verdict is not gradable has predicted_grade -1, nan "
            "probabilities and uncertainty, and referred_* true only when quality.action is "
            "refer",
        },
        "operating_points": thresholds,
        "operating_points_source": "chosen on the run's validation split during training",
        "grades": list(range(NUM_GRADES)),
        "grading": {
            **asdict(grading),
            "thresholds": str(cfg.grading.thresholds) if grading.ordinal else "argmax",
            "note": (
                "What model.keras's outputs mean (retina.models.grading.Grading(head, "
                "cut_points, link) turns them into these probabilities and grade calls); the "
                "SavedModel applies it itself."
            ),
        },
    }


def gate_description(gate: Gate) -> dict:
    """What serving.json says of the SavedModel's quality gate."""
    return {
        "fitted": gate.fitted,
        "learnt_score": bool(gate.params.score_fitted > 0),
        "score_threshold": float(gate.params.score_threshold),
        "not_fundus_threshold": "fundus_distance > 1",
        "rules": gate.rules,
        "action": str(gate.cfg.action),
        "note": "The same verdict as python -m retina.predict and evaluate (retina.quality."
        "gate.gate_batch). A scan the preprocessing finds no field of view in cannot be "
        "given to the SavedModel: it is ungradable (no field of view) before it.",
    }


def export_run(
    run_dir: str | Path, fmt: str = "saved_model", checkpoint: str = "best", output_dir=None
) -> Path:
    """Writes the artifact and ``serving.json`` into ``output_dir`` (default
    ``<run_dir>/export/<checkpoint>-<format>``); returns that folder."""
    fmt = require_choice("format", fmt, ExportFormat)
    run_dir = Path(run_dir)
    cfg, model, path = load_run_model(run_dir, checkpoint)
    thresholds, policy = read_operating_points(path), export_policy(run_dir, path.name)
    out_dir = Path(output_dir) if output_dir else run_dir / EXPORT_DIR / f"{path.name}-{fmt}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "keras":
        model.save(out_dir / KERAS_MODEL_FILE)
    else:
        gate = load_gate(model, cfg, path)
        module = ReferralModel(model, thresholds, cfg.preprocess.image_size, policy, gate)
        tf.saved_model.save(module, str(out_dir / SAVED_MODEL_DIR), signatures=module.serve)
    description = serving_description(cfg, path, thresholds, grading_of(model))
    description["referral"] = policy  # the SavedModel's uncertainty and refer_to_specialist
    if fmt != "keras":
        description["quality_gate"] = gate_description(gate)
    write_json(out_dir / SERVING_FILE, description)
    write_model_card(out_dir, run_dir, cfg, path)
    log.info("Exported %s (%s) to %s", path.name, fmt, out_dir)
    return out_dir

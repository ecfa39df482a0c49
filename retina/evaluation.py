"""Evaluation of a restored checkpoint on held-out scans: ``evaluate_run(run_dir)``.

Writes ``<run_dir>/eval/<checkpoint>-<split>/``: ``metrics.json`` (eye and patient level,
bootstrap and Wilson 95% CIs, at the operating points the checkpoint was saved with),
``predictions.csv`` (one row per scan), four PNG plots and ``report.md``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from retina.checkpoint import find_checkpoint, read_operating_points, restore_weights
from retina.config import DataConfig, RunConfig, load_run_config
from retina.data.cache import build_cache
from retina.data.pipeline import make_eval_dataset
from retina.data.prepare import prepare_run_data
from retina.data.sources import build_manifest
from retina.data.synthetic import SyntheticSpec, ensure_synthetic_dataset
from retina.errors import DataError
from retina.metrics import (
    NUM_GRADES,
    calibration_curve_points,
    evaluation_metrics,
    is_referable,
    patient_level,
    referable_probability,
)
from retina.models import build_model, without_pretrained
from retina.report import write_plots, write_report
from retina.training.loop import CONFIG_FILE
from retina.training.steps import make_predict_step, predict_dataset

log = logging.getLogger(__name__)
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"


def load_evaluation_model(run_dir: Path, checkpoint: str) -> tuple[RunConfig, keras.Model, Path]:
    """The run's config, its model rebuilt in float32 with the checkpoint's weights (verified:
    a damaged or mismatching checkpoint is refused), and the checkpoint's path."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise DataError(f"{config_path} not found: run_dir must be a training run directory.")
    cfg = load_run_config(config_path)
    path = find_checkpoint(run_dir, checkpoint)
    # Float32 whatever the training precision: variables are float32 either way, and
    # full-precision logits make repeated evaluations identical.
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        model = build_model(without_pretrained(cfg.model), cfg.preprocess.image_size)
        restore_weights(model, path)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    return cfg, model, path


def predict_probabilities(
    model: keras.Model, cache_paths: list[str], batch_size: int, tta: bool = False
) -> np.ndarray:
    """Softmax outputs per cached scan, in order; with ``tta``, averaged over the four flips."""
    if not cache_paths:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    dataset = make_eval_dataset(list(cache_paths), [0] * len(cache_paths), batch_size)
    return predict_dataset(make_predict_step(model, tta), dataset)[1]


def probability_columns(probabilities: np.ndarray) -> pd.DataFrame:
    """The model's probabilities, predicted grade (or class) and referable probability."""
    table = pd.DataFrame(probabilities, columns=output_columns(probabilities.shape[1]))
    table["predicted_grade"] = probabilities.argmax(axis=1)
    table["referable_probability"] = referable_probability(probabilities)
    return table


def output_columns(num_outputs: int) -> list[str]:
    """Names of the model's probability columns in prediction tables."""
    if num_outputs == NUM_GRADES:
        return [f"prob_grade_{g}" for g in range(NUM_GRADES)]
    return ["prob_not_referable", "prob_referable"]


def prediction_table(
    rows: pd.DataFrame, probabilities: np.ndarray, thresholds: dict
) -> pd.DataFrame:
    """One row per scan: pseudonymous ids, truth, probabilities, prediction and decisions."""
    ids = rows[["scan_id", "patient", "eye", "grade"]].reset_index(drop=True)
    table = pd.concat([ids, probability_columns(probabilities)], axis=1)
    for name, threshold in thresholds.items():
        table[f"referred_{name}"] = (table["referable_probability"] >= threshold).astype(int)
    return table


def level_metrics(
    table: pd.DataFrame, thresholds: dict, binary_head: bool, seed: int, n_resamples: int
) -> dict:
    """The metrics of one level (a row per scan, or a row per patient)."""
    result = evaluation_metrics(
        table["grade"].to_numpy(),
        table["predicted_grade"].to_numpy(),
        table["referable_probability"].to_numpy(),
        table["patient"].to_numpy(),
        thresholds,
        n_resamples=n_resamples,
        seed=seed,
        binary_head=binary_head,
    )
    result["calibration"] = calibration_curve_points(
        is_referable(table["grade"]), table["referable_probability"].to_numpy()
    )
    return result


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str = "latest",
    split: str = "test",
    batch_size: int = 64,
    tta: bool = False,
    n_resamples: int = 2000,
    seed: int = 0,
    data: DataConfig | None = None,
) -> dict:
    """Scores ``split`` of the run's manifest (or of ``data``, another data set, where
    ``split="all"`` takes all of it) with the restored ``checkpoint``.

    The operating points are the ones stored in the checkpoint (chosen on the validation
    split during training); nothing is tuned here. Returns the metrics written to
    ``<run_dir>/eval/<checkpoint>-<split>/metrics.json``.
    """
    run_dir = Path(run_dir)
    cfg, model, path = load_evaluation_model(run_dir, checkpoint)
    rows, dataset = scored_rows(cfg, run_dir, split, data)
    thresholds = read_operating_points(path)
    probabilities = predict_probabilities(model, rows["cache_path"].tolist(), batch_size, tta)
    predictions = prediction_table(rows, probabilities, thresholds)
    binary = probabilities.shape[1] == 2
    patients = patient_level(predictions)
    metrics = {
        "checkpoint": path.name,
        "dataset": dataset,
        "test_time_augmentation": tta,
        "referable_min_grade": 2,
        "operating_points_source": _operating_points_source(path, cfg),
        "eye_level": level_metrics(predictions, thresholds, binary, seed, n_resamples),
        "patient_level": level_metrics(patients, thresholds, binary, seed, n_resamples),
    }
    out_dir = run_dir / EVAL_DIR / f"{path.name}-{dataset}"
    _write_outputs(out_dir, predictions, metrics)
    _log_summary(metrics, out_dir)
    return metrics


def scored_rows(cfg: RunConfig, run_dir: Path, split: str, data: DataConfig | None):
    """(rows with ``cache_path``, data set name): the run's own split, or ``data``'s scans
    through the run's preprocessing (unusable ones logged and skipped)."""
    if data is None:
        rows = prepare_run_data(cfg, run_dir, splits=(split,))
        if rows.empty:
            raise DataError(f"the run's manifest has no scans in split {split!r}.")
        return rows, split
    if data.layout == "synthetic":
        ensure_synthetic_dataset(data.root, SyntheticSpec(**vars(data.synthetic)), data.workers)
    manifest, problems = build_manifest(data)
    if split != "all":
        manifest = manifest[manifest["split"] == split]
    cached, unreadable = build_cache(
        manifest, data.root, cfg.preprocess, data.cache_dir, data.workers
    )
    if problems or unreadable:
        log.warning("Left out %d unusable inputs of %s.", len(problems + unreadable), data.root)
    rows = manifest[cached != ""].assign(cache_path=cached[cached != ""])
    if rows.empty:
        raise DataError(f"data.root={data.root} has no usable scans in split {split!r}.")
    return rows, f"{data.layout}-{split}"


def _operating_points_source(path: Path, cfg: RunConfig) -> str:
    step = path.name.split("-")[-1]
    return (
        f"chosen on the validation split at step {step}: sensitivity >= "
        f"{cfg.train.target_sensitivity}, specificity >= {cfg.train.target_specificity}; "
        f"default threshold {cfg.train.referable_threshold}"
    )


def _json_ready(value):
    """NaN becomes null (valid JSON); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_outputs(out_dir: Path, predictions: pd.DataFrame, metrics: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out_dir / PREDICTIONS_FILE, index=False, float_format="%.6f")
    text = json.dumps(_json_ready(metrics), indent=2, sort_keys=True)
    (out_dir / METRICS_FILE).write_text(text + "\n")
    write_report(out_dir, metrics, write_plots(out_dir, predictions, metrics))


def _log_summary(metrics: dict, out_dir: Path) -> None:
    eye = metrics["eye_level"]
    auc = eye["referable_auc"]
    points = eye["operating_points"]
    log.info(
        "Held-out %s, %s (%d scans, %d patients): referable AUC %.3f [%.3f, %.3f]; "
        "default threshold: sensitivity %.3f, specificity %.3f; kappa %.3f -> %s",
        metrics["dataset"],
        metrics["checkpoint"],
        eye["n"],
        metrics["patient_level"]["n"],
        auc["value"],
        auc["low"],
        auc["high"],
        points["default"]["sensitivity"]["value"],
        points["default"]["specificity"]["value"],
        eye["quadratic_weighted_kappa"],
        out_dir,
    )

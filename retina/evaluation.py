"""Evaluation of a restored checkpoint on held-out scans: ``evaluate_run(run_dir)``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras

from retina.checkpoint import find_checkpoint, restore_weights
from retina.config import load_run_config
from retina.data.pipeline import make_eval_dataset
from retina.data.prepare import prepare_run_data
from retina.errors import DataError
from retina.metrics import clinical_metrics
from retina.models import build_model, without_pretrained
from retina.training.loop import CONFIG_FILE
from retina.training.steps import make_predict_step, predict_dataset

log = logging.getLogger(__name__)
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"


def evaluate_run(
    run_dir: str | Path, checkpoint: str = "latest", split: str = "test", batch_size: int = 64
) -> dict:
    """Rebuilds the run's model from its saved config, restores weights, scores ``split``.

    Writes ``<run_dir>/eval/metrics.json`` and returns the metrics.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise DataError(f"{config_path} not found: run_dir must be a training run directory.")
    cfg = load_run_config(config_path)
    rows = prepare_run_data(cfg, run_dir, splits=(split,))
    if rows.empty:
        raise DataError(f"the run's manifest has no scans in split {split!r}.")
    path = find_checkpoint(run_dir, checkpoint)
    # Evaluation runs in float32 whatever the training precision: variables are float32
    # either way, and full-precision logits make repeated evaluations identical.
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        model = build_model(without_pretrained(cfg.model), cfg.preprocess.image_size)
        restore_weights(model, path)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    dataset = make_eval_dataset(rows["cache_path"].tolist(), rows["grade"].tolist(), batch_size)
    grades, probabilities = predict_dataset(make_predict_step(model), dataset)
    metrics = clinical_metrics(grades, probabilities, cfg.train.referable_threshold)
    metrics.update(checkpoint=Path(path).name, split=split)
    out_dir = run_dir / EVAL_DIR
    out_dir.mkdir(exist_ok=True)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    log.info(
        "Held-out %s split, %s (%d scans): referable AUC %.3f, sensitivity %.3f, "
        "specificity %.3f, kappa %.3f, accuracy %.3f -> %s",
        split,
        Path(path).name,
        metrics["n_scans"],
        metrics["referable_auc"],
        metrics["sensitivity"],
        metrics["specificity"],
        metrics["quadratic_weighted_kappa"],
        metrics["accuracy"],
        out_dir / METRICS_FILE,
    )
    return metrics

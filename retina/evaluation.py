"""Evaluation of a restored checkpoint on held-out scans: ``evaluate_run(run_dir)``.

Writes ``<run_dir>/eval/<checkpoint>-<split>/``: ``metrics.json`` (eye and patient level,
bootstrap and Wilson 95% CIs, at the operating points the checkpoint was saved with),
``predictions.csv`` (one row per scan), four PNG plots and ``report.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from retina.checkpoint.read import read_operating_points
from retina.config import DataConfig, RunConfig
from retina.data.cache import build_cache
from retina.data.prepare import prepare_run_data
from retina.data.sources import build_manifest
from retina.data.synthetic import ensure_synthetic_dataset
from retina.errors import DataError
from retina.files import write_atomically, write_json
from retina.icdr import REFERABLE_MIN_GRADE
from retina.inference import load_run_model, predict_probabilities, probability_columns
from retina.metrics.calibration import calibration_curve_points
from retina.metrics.rates import is_referable
from retina.metrics.summary import evaluation_metrics, patient_level
from retina.report import write_plots, write_report
from retina.run_dir import METRICS_FILE, PREDICTIONS_FILE, evaluation_dir

log = logging.getLogger(__name__)


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
    cfg, model, path = load_run_model(run_dir, checkpoint)
    rows, dataset = scored_rows(cfg, run_dir, split, data)
    log.info("Scoring %d scans of %s with %s.", len(rows), dataset, path.name)
    thresholds = read_operating_points(path)
    probabilities = predict_probabilities(model, rows["cache_path"].tolist(), batch_size, tta)
    predictions = prediction_table(rows, probabilities, thresholds)
    binary = probabilities.shape[1] == 2
    patients = patient_level(predictions)
    metrics = {
        "checkpoint": path.name,
        "dataset": dataset,
        "test_time_augmentation": tta,
        "referable_min_grade": REFERABLE_MIN_GRADE,
        "operating_points_source": _operating_points_source(path, cfg),
        "eye_level": level_metrics(predictions, thresholds, binary, seed, n_resamples),
        "patient_level": level_metrics(patients, thresholds, binary, seed, n_resamples),
    }
    out_dir = evaluation_dir(run_dir, path.name, dataset)
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
        ensure_synthetic_dataset(data.root, data.synthetic, data.workers, data.sites)
    manifest, problems = build_manifest(data)
    if split != "all":
        manifest = manifest[manifest["split"] == split]
    cached, unreadable = build_cache(
        manifest, data.root, cfg.preprocess, data.cache_dir, data.workers, data.id_salt
    )
    cached = cached["cache_path"]
    if problems or unreadable:
        log.warning("Left out %d unusable inputs of %s.", len(problems + unreadable), data.root)
    rows = manifest[cached != ""].assign(cache_path=cached[cached != ""])
    if rows.empty:
        raise DataError(f"data.root={data.root} has no usable scans in split {split!r}.")
    sites = f"-{'+'.join(data.sites)}" if data.sites else ""
    return rows, f"{data.layout}{sites}-{split}"  # e.g. synthetic-D-test: the external site


def _operating_points_source(path: Path, cfg: RunConfig) -> str:
    step, points = path.name.split("-")[-1], cfg.operating_points
    return (
        f"chosen on the validation split at step {step}: sensitivity >= "
        f"{points.target_sensitivity}, specificity >= {points.target_specificity}; "
        f"default threshold {points.referable_threshold}"
    )


def _write_outputs(out_dir: Path, predictions: pd.DataFrame, metrics: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(
        out_dir / PREDICTIONS_FILE,
        lambda path: predictions.to_csv(path, index=False, float_format="%.6f"),
    )
    write_json(out_dir / METRICS_FILE, metrics, sort_keys=True)
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

"""Evaluation of a restored checkpoint on held-out scans: ``evaluate_run(run_dir)``.

Writes ``<run_dir>/eval/<checkpoint>-<split>/``: ``metrics.json`` (eye and patient level,
bootstrap and Wilson 95% CIs, at the operating points the checkpoint was saved with),
``predictions.csv`` (one row per scan, with its subgroup columns), the PNG plots,
``report.md``, ``report.html`` and the failure gallery's Grad-CAM overlays (``gallery/``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from retina.checkpoint.read import read_operating_points
from retina.config import DataConfig, RunConfig, UncertaintyConfig
from retina.data.cache import build_cache
from retina.data.label_tables import PATIENT_FACTS
from retina.data.prepare import prepare_run_data
from retina.data.sources import build_manifest
from retina.data.synthetic import ensure_synthetic_dataset
from retina.errors import DataError
from retina.evaluation.gated import (
    measured,
    quality_record,
    with_graders_ungradable,
)
from retina.evaluation.policy import apply_policy, policy_and_calibration
from retina.evaluation.shift import rebalanced
from retina.explanations.overlays import failure_gallery
from retina.files import write_atomically, write_json
from retina.icdr import REFERABLE_MIN_GRADE
from retina.inference.outputs import probability_columns
from retina.inference.restore import load_run_model
from retina.metrics.calibration import calibration_curve_points
from retina.metrics.rates import is_referable
from retina.metrics.subgroups import SUBGROUPS, subgroup_columns, subgroup_metrics
from retina.metrics.summary import evaluation_metrics, patient_level
from retina.metrics.undefined import as_records, gathered, log_undefined, where
from retina.models.grading import Grading, ensemble_grading, grading_of, grading_record
from retina.quality.scoring import Gate, apply_gate, load_gate
from retina.quality.summary import GRADERS_COLUMN
from retina.reports.figures import write_plots
from retina.reports.provenance import study_facts
from retina.reports.quality_gate import quality_gate_section
from retina.reports.referral_curves import referral_section, write_referral_plots
from retina.reports.report_html import write_html_report
from retina.reports.report_md import subgroup_section, write_report
from retina.reports.shift_comparison import comparison_section
from retina.reports.shift_comparison import summary as shift_summary
from retina.run_dir import METRICS_FILE, PREDICTIONS_FILE, evaluation_dir, read_manifest
from retina.uncertainty.referral import (
    referral_metrics,
    uncertainty_columns,
)
from retina.uncertainty.sampling import sample_scans

log = logging.getLogger(__name__)


def prediction_table(
    rows: pd.DataFrame, probabilities: np.ndarray, thresholds: dict, grading: Grading
) -> pd.DataFrame:
    """One row per scan: pseudonymous ids, truth, probabilities, prediction and decisions."""
    ids = rows[["scan_id", "patient", "eye", "grade"]].reset_index(drop=True)
    table = pd.concat([ids, probability_columns(probabilities, grading)], axis=1)
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


@dataclass
class Scorer:
    """What scores the scans: one model (or an ensemble's members), the operating points,
    where they came from, and the folder whose ``referral.json`` applies."""

    models: list
    thresholds: dict
    checkpoint: str
    points_source: str
    policy_dir: Path
    gate: Gate  # retina.quality: the checkpoint's (an ensemble: its first member's)
    action: str  # quality.action: a withheld scan's decision
    facts: dict = field(default_factory=dict)  # reports.provenance.study_facts: report.html


@dataclass
class Options:
    split: str = "test"
    batch_size: int = 64
    tta: bool = False
    n_resamples: int = 2000
    seed: int = 0
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    subgroups: tuple[str, ...] = SUBGROUPS
    explain: bool = True  # the failure gallery's Grad-CAM overlays (one model, not ensembles)


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str = "latest",
    split: str = "test",
    batch_size: int = 64,
    tta: bool = False,
    n_resamples: int = 2000,
    seed: int = 0,
    data: DataConfig | None = None,
    uncertainty: UncertaintyConfig | None = None,
    rebalance: bool = False,
) -> dict:
    """Scores ``split`` of the run's manifest (or of ``data``, another data set, where
    ``split="all"`` takes all of it) with the restored ``checkpoint``.

    The operating points are the ones stored in the checkpoint (chosen on the validation
    split during training); nothing is tuned here. With ``uncertainty``, each scan also
    gets its predictive uncertainty and the evaluation its referral curves. Another data
    set is reported beside the run's own test split (evaluated too), optionally
    ``rebalance``d to its grade mix. Returns the metrics written to
    ``<run_dir>/eval/<checkpoint>-<split>/metrics.json``.
    """
    options = Options(split, batch_size, tta, n_resamples, seed, uncertainty or UncertaintyConfig())
    return evaluate_with(Path(run_dir), checkpoint, options, data, rebalance)


def evaluate_with(
    run_dir: Path,
    checkpoint: str,
    options: Options,
    data: DataConfig | None = None,
    rebalance: bool = False,
) -> dict:
    """``evaluate_run`` with its options gathered."""
    in_domain = None
    if data is not None:  # the run's own test split, scored the same way, goes beside it
        in_domain = evaluate_with(run_dir, checkpoint, replace(options, split="test"))
    cfg, model, path = load_run_model(run_dir, checkpoint)
    rows, dataset = scored_rows(cfg, run_dir, options.split, data)
    if data is None:
        rows = with_graders_ungradable(cfg, run_dir, options.split, rows)
    if rebalance and data is not None:
        rows = rebalanced(rows, _test_grades(run_dir), options.seed)
        dataset = f"{dataset}-rebalanced"
    points = read_operating_points(path)
    source = _operating_points_source(path, cfg)
    gate, action = load_gate(model, cfg, path), str(cfg.quality.action)
    facts = study_facts(run_dir, cfg, path)
    scorer = Scorer([model], points, path.name, source, run_dir, gate, action, facts)
    out_dir = _out_dir(run_dir, path.name, dataset, options)
    return score(scorer, rows, dataset, out_dir, options, in_domain)


def _out_dir(run_dir: Path, checkpoint: str, dataset: str, options: Options) -> Path:
    """``<run_dir>/eval/<checkpoint>-<data set>[-<method>]``: each uncertainty method its
    own folder, ``none`` the plain name."""
    method = str(options.uncertainty.method)
    return evaluation_dir(
        run_dir, checkpoint, dataset if method == "none" else f"{dataset}-{method}"
    )


def _test_grades(run_dir: Path) -> pd.Series:
    manifest = read_manifest(run_dir)
    return manifest.loc[manifest["split"] == "test", "grade"]


def sample_rows(models: list, rows: pd.DataFrame, method: str, options: Options) -> np.ndarray:
    """The rows' sampled probabilities (samples, scans, classes) for ``method``."""
    paths = rows["cache_path"].tolist()
    u = options.uncertainty
    return sample_scans(models, paths, method, u.samples, options.batch_size, options.tta)


def score(
    scorer: Scorer,
    rows: pd.DataFrame,
    dataset: str,
    out_dir: Path,
    options: Options,
    in_domain: dict | None = None,
    samples: np.ndarray | None = None,
) -> dict:
    """Predicts (unless the ``samples`` are given), measures and writes one evaluation;
    see ``evaluate_run``."""
    method = str(options.uncertainty.method)
    log.info(
        "Scoring %d scans of %s with %s (uncertainty: %s).",
        len(rows),
        dataset,
        scorer.checkpoint,
        method,
    )
    if samples is None:
        samples = sample_rows(scorer.models, rows, method, options)
    # An ensemble's policy is keyed by its member count (out-of-fold: fewer per scan).
    policy_samples = len(scorer.models) if method == "ensemble" else len(samples)
    probabilities = samples.mean(axis=0)
    grading = ensemble_grading([grading_of(model) for model in scorer.models])
    verdicts = scorer.gate.verdicts(
        scorer.models[0], rows["cache_path"].tolist(), options.batch_size
    )
    kept = measured(rows, verdicts)  # the gate's let-through, graders' graded scans
    if not kept.any():
        raise DataError(
            f"the quality gate withheld every one of the {len(rows)} scans of {dataset}: "
            "nothing to measure. Its verdicts: python -m retina.predict run_dir=<run> "
            "input=<the scans>; its thresholds: quality.* in the run's config."
        )
    everything = prediction_table(rows, probabilities, scorer.thresholds, grading)
    policy, calibration = policy_and_calibration(scorer, everything[kept], options, policy_samples)
    everything = pd.concat(
        [
            everything,
            uncertainty_columns(samples, calibration),
            _subgroup_columns(rows, options.subgroups),
        ],
        axis=1,
    )
    predictions = everything[kept].reset_index(drop=True)
    binary = probabilities.shape[1] == 2
    seed, resamples, thresholds = options.seed, options.n_resamples, scorer.thresholds
    with gathered() as undefined_metrics:
        with where("eye level"):
            eye = level_metrics(predictions, thresholds, binary, seed, resamples)
        with where("patient level"):
            patients = level_metrics(
                patient_level(predictions), thresholds, binary, seed, resamples
            )
        with where("referral"):
            referral = referral_metrics(
                predictions,
                thresholds["default"],
                options.uncertainty,
                len(samples),
                calibration,
                resamples,
                seed,
            )
        metrics = {
            "checkpoint": scorer.checkpoint,
            "dataset": dataset,
            "test_time_augmentation": options.tta,
            "referable_min_grade": REFERABLE_MIN_GRADE,
            "operating_points_source": scorer.points_source,
            "grading": grading_record(grading),
            "eye_level": eye,
            "patient_level": patients,
            "referral": referral,
            "subgroups": subgroup_metrics(
                predictions, list(options.subgroups), thresholds, resamples, seed
            ),
            "failure_gallery": _gallery(scorer, predictions, rows[kept], out_dir, options),
        }
        apply_policy(
            scorer, everything, kept, metrics, options, policy_samples, policy, calibration
        )
    predictions = everything[kept].reset_index(drop=True)  # with the policy's column
    metrics["quality_gate"] = quality_record(scorer, rows, verdicts, options)
    metrics["referral"]["withheld_by_quality_gate"] = metrics["quality_gate"]["withheld"]
    metrics["undefined"] = as_records(undefined_metrics)  # each nan's reason
    log_undefined(undefined_metrics, log, f"Evaluation of {dataset} (where and why: metrics.json)")
    if in_domain:
        metrics["in_domain"] = shift_summary(in_domain)
    written = apply_gate(everything, verdicts, scorer.action, "referred_default")
    if GRADERS_COLUMN in rows:  # which scans the graders could grade (the gate's truth)
        written.insert(4, GRADERS_COLUMN, rows[GRADERS_COLUMN].to_numpy())
    _write_outputs(out_dir, written, predictions, metrics, scorer.facts)
    _log_summary(metrics, out_dir)
    return metrics


def _subgroup_columns(rows: pd.DataFrame, subgroups) -> pd.DataFrame:
    """The manifest's (or derived) columns the subgroups are formed by, one row per scan,
    for predictions.csv: every subgroup figure can be recomputed from it."""
    rows = rows.reset_index(drop=True)
    facts = pd.concat(
        [rows[[c for c in PATIENT_FACTS if c in rows]], subgroup_columns(rows)], axis=1
    )
    return facts[[c for c in subgroups if c in facts]]


def _gallery(scorer: Scorer, predictions, rows, out_dir: Path, options: Options) -> list[dict]:
    """The failure gallery with Grad-CAM overlays; empty for an ensemble (one member's map
    would not explain the mean) or without ``explain``."""
    if not options.explain or len(scorer.models) != 1:
        return []
    return failure_gallery(scorer.models[0], predictions, rows["cache_path"].tolist(), out_dir)


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


def _write_outputs(out_dir: Path, written, predictions, metrics: dict, facts: dict) -> None:
    """``written`` (every scan, verdicts, withheld ones without a grade) as predictions.csv;
    the plots and reports of ``predictions``, the scans the metrics are measured on."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(
        out_dir / PREDICTIONS_FILE,
        lambda path: written.to_csv(path, index=False, float_format="%.6f"),
    )
    write_json(out_dir / METRICS_FILE, metrics, sort_keys=True)
    plots = write_plots(out_dir, predictions, metrics)
    plots |= write_referral_plots(out_dir, predictions, metrics)
    sections = [quality_gate_section(metrics), referral_section(metrics)]
    if metrics["subgroups"]:
        sections.append(subgroup_section(metrics["subgroups"]))
    if "in_domain" in metrics:
        sections.append(comparison_section(metrics["in_domain"], shift_summary(metrics)))
    write_report(out_dir, metrics, plots, tuple(sections))
    write_html_report(out_dir, metrics, plots, facts)


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

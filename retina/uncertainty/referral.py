"""Referral by uncertainty: the per-scan measures as table columns, the referral
(retention) metrics of an evaluation, and the policy that travels with the model.

The policy (``referral.json``, written by ``evaluate split=val``) is an uncertainty
threshold chosen on validation predictions so that ``uncertainty.referral_fraction`` of
them is referred. ``evaluate`` on other splits, ``predict`` and the exported SavedModel
then refer a scan to a specialist when its uncertainty is above the threshold or its
referable probability is at or above the operating point.

With ``uncertainty.calibrate`` (the default) the policy also carries a Platt fit of the
referable probability on those validation scans, and the referable decision's uncertainty
is measured on the recalibrated probabilities wherever the policy applies (evaluation of
other splits and data sets, ``predict``, the SavedModel). Why: an entropy is largest at
0.5, so ranking by it assumes the probability is calibrated. A 5-grade softmax whose
referable sum runs low (measured on the built-in data: a best checkpoint whose grade-2
scans averaged 0.32) puts its borderline referable scans among the confident negatives,
and referral by the raw entropy then gains nothing; recalibrated on validation, the same
predictions do (docs/evaluation.md, "Referral by uncertainty"). The Platt map is monotone: no AUC,
operating point or ranking by probability changes. On ``split=val`` the fit is in-sample.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from retina.errors import ConfigError
from retina.files import read_json, write_json
from retina.metrics.calibration import fit_platt
from retina.metrics.rates import is_referable
from retina.metrics.retention import retention_curves
from retina.metrics.uncertainty import scan_uncertainty
from retina.run_dir import REFERRAL_FILE

log = logging.getLogger(__name__)
REFER_COLUMN = "refer_to_specialist"


def uncertainty_columns(samples: np.ndarray, platt: dict | None = None) -> pd.DataFrame:
    """One column per measure (the referable ones recalibrated with ``platt`` when given);
    from a single prediction, its entropies only."""
    measures = scan_uncertainty(samples, platt)
    if len(samples) == 1:  # nothing sampled: no disagreement to measure
        measures = {k: v for k, v in measures.items() if k.endswith("predictive_entropy")}
    return pd.DataFrame(measures)


def ranking_column(measure: str, table: pd.DataFrame) -> str:
    """The column that ranks scans for referral: the referable decision's ``measure``."""
    column = f"referable_{measure}"
    if column not in table:
        raise ConfigError(
            f"uncertainty.measure={measure} needs more than one sampled prediction per scan; "
            "with uncertainty.method=none (or out-of-fold scores of folds trained with one "
            "seed each) only predictive_entropy is defined. Use uncertainty.method="
            "mc_dropout, ensemble or tta, or uncertainty.measure=predictive_entropy."
        )
    return column


def fit_calibration(predictions: pd.DataFrame) -> dict | None:
    """Platt fit of these (validation) scans' referable probabilities, or None (logged)
    when they are all of one class."""
    try:
        return fit_platt(is_referable(predictions["grade"]), predictions["referable_probability"])
    except ValueError as error:
        log.warning("No recalibration for referral: %s Uncertainty stays uncalibrated.", error)
        return None


def referral_metrics(
    predictions: pd.DataFrame,
    threshold: float,
    uncertainty,
    samples: int,
    calibration: dict | None,
    n_resamples: int,
    seed: int,
) -> dict:
    """Retention curves of the referable decision at ``threshold`` (see
    ``retina.metrics.retention``), ranked by the configured measure (of probabilities
    recalibrated with ``calibration``, when not None)."""
    column = ranking_column(str(uncertainty.measure), predictions)
    curves = retention_curves(
        is_referable(predictions["grade"]),
        predictions["referable_probability"].to_numpy(),
        predictions[column].to_numpy(),
        predictions["patient"].to_numpy(),
        threshold,
        n_resamples=n_resamples,
        seed=seed,
    )
    return {
        "method": str(uncertainty.method),
        "samples": samples,
        "measure": str(uncertainty.measure),
        "calibration": calibration,
        **curves,
    }


def choose_policy(
    predictions: pd.DataFrame, uncertainty, samples: int, checkpoint: str, calibration, dataset
) -> dict:
    """The threshold above which ``referral_fraction`` of these (validation) scans of
    ``dataset`` lie, with the ``calibration`` their uncertainty was measured after.
    ``samples``: MC passes, or an ensemble's member count."""
    fraction = uncertainty.referral_fraction
    if not 0 <= fraction < 1:
        raise ConfigError(f"uncertainty.referral_fraction={fraction} must be in [0, 1).")
    values = predictions[ranking_column(str(uncertainty.measure), predictions)].to_numpy()
    return {
        "method": str(uncertainty.method),
        "samples": samples,
        "measure": str(uncertainty.measure),
        "threshold": float(np.quantile(values, 1 - fraction)),
        "fraction": fraction,
        "chosen_on": f"{len(values)} scans of {dataset}",
        "checkpoint": checkpoint,
        "calibration": calibration,
    }


def write_policy(folder: Path, policy: dict) -> Path:
    path = Path(folder) / REFERRAL_FILE
    write_json(path, policy, sort_keys=True)
    log.info(
        "Referral policy: refer above %s %.4f (%.0f%% of validation) -> %s",
        policy["measure"],
        policy["threshold"],
        100 * policy["fraction"],
        path,
    )
    return path


def read_policy(folder: Path, uncertainty, samples: int, checkpoint: str) -> dict | None:
    """The folder's policy if it was chosen for this checkpoint with this method, measure,
    sample count and calibration setting (``uncertainty.calibrate``)."""
    path = Path(folder) / REFERRAL_FILE
    if not path.is_file():
        return None
    policy = read_json(path)
    u = uncertainty
    wanted = _policy_key(u.method, u.measure, samples, u.calibrate, checkpoint)
    found = _policy_key(
        *(policy.get(key) for key in ("method", "measure", "samples", "calibration", "checkpoint"))
    )
    if found != wanted:
        log.warning(
            "%s was chosen for %s, not %s: no refer_to_specialist column (run evaluate "
            "split=val with these settings and checkpoint to choose one).",
            path,
            found,
            wanted,
        )
        return None
    return policy


def _policy_key(method, measure, samples, calibrated, checkpoint) -> dict:
    return {
        "method": str(method),
        "measure": str(measure),
        "samples": samples,
        "calibrated": bool(calibrated),
        "checkpoint": checkpoint,
    }


def refer(uncertainty: np.ndarray, referred: np.ndarray, policy: dict) -> np.ndarray:
    """Refer when too uncertain, or when the operating point refers anyway.

    Compared in float32, as the SavedModel compares: a scan whose every MC sample is
    saturated sits exactly at the largest entropy, ln 2, where a threshold chosen among
    such scans lies too, and float64 and float32 would round that tie apart."""
    too_uncertain = np.float32(uncertainty) > np.float32(policy["threshold"])
    return too_uncertain | np.asarray(referred, bool)

"""Predictive uncertainty from sampled predictions (MC-dropout passes, ensemble members,
test-time augmentations), for the referable decision and for the 5 grades.

With S samples of class probabilities p_s (natural logarithms, nats):

- predictive entropy H[mean_s p_s]: the total uncertainty;
- expected entropy mean_s H[p_s]: the aleatoric part (what each sample is unsure of);
- mutual information, their difference: the epistemic part (how much the samples
  disagree); 0 when every sample says the same.

The referable decision is the Bernoulli (1 - r, r) of r = P(grade >= 2). Given a Platt
fit (``retina.metrics.calibration.fit_platt``), each sample's r is recalibrated first, so
the entropies are those of calibrated probabilities (see ``retina.uncertainty.referral``).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import entropy

from retina.metrics.calibration import apply_platt
from retina.metrics.rates import referable_probability

MEASURES = ("predictive_entropy", "expected_entropy", "mutual_information")


def uncertainty_measures(samples: np.ndarray) -> dict[str, np.ndarray]:
    """The three measures per scan from ``samples`` of shape (S, N, classes)."""
    samples = np.asarray(samples, float)
    predictive = entropy(samples.mean(axis=0), axis=-1)
    expected = entropy(samples, axis=-1).mean(axis=0)
    # Equal in exact arithmetic when the samples agree; never negative.
    return {
        "predictive_entropy": predictive,
        "expected_entropy": expected,
        "mutual_information": np.maximum(predictive - expected, 0.0),
    }


def referable_samples(samples: np.ndarray, platt: dict | None = None) -> np.ndarray:
    """(S, N, 5) grade probabilities -> (S, N, 2): not referable, referable (recalibrated
    with ``platt`` when given)."""
    referable = np.stack([referable_probability(s) for s in np.asarray(samples)])
    if platt:
        referable = apply_platt(referable, platt)
    return np.stack([1 - referable, referable], axis=-1)


def scan_uncertainty(samples: np.ndarray, platt: dict | None = None) -> dict[str, np.ndarray]:
    """Every measure for the referable decision (``referable_<measure>``, from
    probabilities recalibrated with ``platt`` when given) and the grades
    (``grade_<measure>``) from (S, N, classes) samples."""
    samples = np.asarray(samples, float)
    referable = referable_samples(samples, platt)
    measures = {f"referable_{k}": v for k, v in uncertainty_measures(referable).items()}
    if samples.shape[-1] > 2:
        measures |= {f"grade_{k}": v for k, v in uncertainty_measures(samples).items()}
    return measures

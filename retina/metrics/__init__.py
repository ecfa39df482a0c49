"""Clinical metrics on numpy arrays, named the way DR papers name them (MONAI's manner: small
pure functions, one concern per module).

    rates         sensitivity, specificity, PPV, NPV, AUC, kappa, accuracy; referable scores
    intervals     Wilson intervals of proportions
    bootstrap     patient-level bootstrap interval of the AUC
    calibration   reliability points and expected calibration error
    thresholds    thresholds for a target sensitivity/specificity, operating points
    summary       the per-epoch and the evaluation tables; per grade; per patient
    uncertainty   entropies and mutual information of sampled predictions
    retention     referral (retention) curves with patient-bootstrap intervals
    subgroups     the referable decision per site, eye, sex, age band, image quality
    undefined     nan with a reason: a warning, or one line per evaluation (``gathered``)

Referable DR is ICDR grade >= 2 unless told otherwise. Where a metric is undefined (one
class only, or no data), it returns ``nan`` with a reason, never raises. It imports only
the foundations (``icdr``, ``errors``) and the libraries.
"""

from retina.icdr import NUM_GRADES, REFERABLE_MIN_GRADE
from retina.metrics.bootstrap import bootstrap_auc_interval, bootstrap_aucs
from retina.metrics.calibration import calibration_curve_points, expected_calibration_error
from retina.metrics.intervals import wilson_interval
from retina.metrics.rates import (
    accuracy,
    is_referable,
    npv,
    ppv,
    quadratic_weighted_kappa,
    referable_probability,
    roc_auc,
    sensitivity,
    specificity,
)
from retina.metrics.summary import (
    PATIENT_COLUMNS,
    clinical_metrics,
    evaluation_metrics,
    grading_metrics,
    patient_level,
    per_grade,
)
from retina.metrics.thresholds import (
    choose_operating_points,
    operating_point,
    threshold_for_sensitivity,
    threshold_for_specificity,
)

__all__ = [
    "NUM_GRADES",
    "PATIENT_COLUMNS",
    "REFERABLE_MIN_GRADE",
    "accuracy",
    "bootstrap_auc_interval",
    "bootstrap_aucs",
    "calibration_curve_points",
    "choose_operating_points",
    "clinical_metrics",
    "evaluation_metrics",
    "expected_calibration_error",
    "grading_metrics",
    "is_referable",
    "npv",
    "operating_point",
    "patient_level",
    "per_grade",
    "ppv",
    "quadratic_weighted_kappa",
    "referable_probability",
    "roc_auc",
    "sensitivity",
    "specificity",
    "threshold_for_sensitivity",
    "threshold_for_specificity",
    "wilson_interval",
]

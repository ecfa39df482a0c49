"""The fixed choices of config keys, as ``StrEnum`` types: Hydra refuses any other value
while composing a config, and ``retina.config.check_choices`` in one built in Python."""

from __future__ import annotations

from enum import StrEnum


class OnError(StrEnum):
    skip = "skip"
    fail = "fail"


class TrainLabel(StrEnum):
    """Whose grades training learns from (splits and evaluation: always the adjudicated)."""

    adjudicated = "adjudicated"
    grader_1 = "grader_1"
    grader_2 = "grader_2"
    grader_3 = "grader_3"


class CacheFormat(StrEnum):
    """How preprocessed scans are stored (``retina.data.cache``)."""

    auto = "auto"  # png below 384 px, jpeg from 384 px (docs/benchmarks.md, Data)
    png = "png"  # lossless
    jpeg = "jpeg"  # quality 95: decodes about 3x faster at 512 px, so the stream feeds a GPU


class QualityAction(StrEnum):
    """What becomes of a scan the quality gate withholds (``quality.action``)."""

    retake = "retake"  # photograph the eye again; no grade, no referral decision
    refer = "refer"  # refer the patient for an examination in person


class PathsInOutputs(StrEnum):
    """Whether source paths may appear in what a run writes (clinic exports often name
    folders after patients)."""

    auto = "auto"  # pseudonymise for the generic folder layout, keep for published layouts
    keep = "keep"
    pseudonymise = "pseudonymise"


class ExplainMethod(StrEnum):
    """How saliency maps are made (``retina.explanations.saliency``)."""

    grad_cam = "grad_cam"  # gradients at the last feature map: one pass per batch
    occlusion = "occlusion"  # blurred-out squares: 225 passes per scan, no gradients


class Head(StrEnum):
    """What the model's last layer learns (``retina.models.grading``)."""

    softmax = "softmax"  # 5 grades, unordered classes
    coral = "coral"  # ordinal: P(grade > k), one shared weight vector (CORAL)
    corn = "corn"  # ordinal: conditional P(grade > k | grade > k - 1) (CORN)
    regression = "regression"  # the grade as a number
    referable = "referable"  # 2 classes: grade >= 2 or not


class GradeThresholds(StrEnum):
    """Where an ordinal head's grade call cuts the expected grade."""

    fitted = "fitted"  # on validation, to maximise quadratic weighted kappa
    fixed = "fixed"  # at 0.5, 1.5, 2.5, 3.5


class OptimizerName(StrEnum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class ScheduleName(StrEnum):
    constant = "constant"
    warmup_cosine = "warmup_cosine"
    step = "step"


class Strategy(StrEnum):
    auto = "auto"
    default = "default"
    mirrored = "mirrored"
    multi_worker = "multi_worker"


class Cluster(StrEnum):
    auto = "auto"
    tf_config = "tf_config"
    slurm = "slurm"


class Precision(StrEnum):
    auto = "auto"
    float32 = "float32"
    mixed_float16 = "mixed_float16"
    mixed_bfloat16 = "mixed_bfloat16"


class Sampler(StrEnum):
    shuffle = "shuffle"
    balanced = "balanced"


class Adaptation(StrEnum):
    finetune = "finetune"  # every layer learns (train.freeze_backbone_epochs may hold some)
    linear_probe = "linear_probe"  # only head_logits learns (RETFound's --adaptation lp)


class OnNonfinite(StrEnum):
    stop = "stop"
    rollback = "rollback"


class ValidationMetric(StrEnum):
    """The validation metrics ``best/`` can be ranked by (``checkpoint.best_metric``)."""

    referable_auc = "referable_auc"
    sensitivity = "sensitivity"
    specificity = "specificity"
    quadratic_weighted_kappa = "quadratic_weighted_kappa"
    # RETFound's model selection: (macro F1 + macro one-vs-rest AUROC + Cohen's kappa) / 3.
    retfound_score = "retfound_score"


class BestMode(StrEnum):
    max = "max"
    min = "min"


class Split(StrEnum):
    test = "test"
    val = "val"
    train = "train"
    all = "all"


class OperatingPoint(StrEnum):
    """The referral thresholds chosen on validation and stored in every checkpoint."""

    default = "default"
    high_sensitivity = "high_sensitivity"
    high_specificity = "high_specificity"


class ExportFormat(StrEnum):
    saved_model = "saved_model"
    keras = "keras"


class UncertaintyMethod(StrEnum):
    """Where the samples behind predictive uncertainty come from
    (``retina.uncertainty.sampling``)."""

    none = "none"  # the one softmax output: its entropy only
    mc_dropout = "mc_dropout"  # uncertainty.samples passes with the head's dropout active
    ensemble = "ensemble"  # one sample per member run (ensemble.members or ensemble.sweep_dir)
    tta = "tta"  # the four flips


class UncertaintyMeasure(StrEnum):
    """What ranks scans for referral (of the referable decision)."""

    predictive_entropy = "predictive_entropy"  # total
    mutual_information = "mutual_information"  # epistemic: the samples disagree
    expected_entropy = "expected_entropy"  # aleatoric

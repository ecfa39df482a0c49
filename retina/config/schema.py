"""Typed schemas for every config group, registered with Hydra's ConfigStore.

``conf/train.yaml`` and ``conf/evaluate.yaml`` start from these schemas, so a misspelt key,
a value of the wrong type or an unknown choice fails at start-up with the key named. Fixed
choices are ``StrEnum`` fields: Hydra refuses any other value while composing, and
``retina.config.strict.check_choices`` refuses it in a config built in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from retina.config.choices import (
    Adaptation,
    BestMode,
    CacheFormat,
    Cluster,
    ExplainMethod,
    ExportFormat,
    GradeThresholds,
    Head,
    OnError,
    OnNonfinite,
    OperatingPoint,
    OptimizerName,
    PathsInOutputs,
    Precision,
    QualityAction,
    Sampler,
    ScheduleName,
    Split,
    Strategy,
    TrainLabel,
    UncertaintyMeasure,
    UncertaintyMethod,
    ValidationMetric,
)
from retina.config.folder_names import evaluation_log_dir, job_folder_name


@dataclass
class SyntheticConfig:
    """Everything that determines the built-in synthetic set; equal configs, equal files."""

    n_patients: int = 400
    image_height: int = 256
    seed: int = 0
    lesion_masks: bool = True
    lesion_scale: float = 1.0
    grade_probs: list[float] = field(default_factory=lambda: [0.38, 0.14, 0.24, 0.12, 0.12])


@dataclass
class DataConfig:
    layout: str = "synthetic"
    root: str = "data/synthetic"
    cache_dir: str = "data/cache"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    folds: int = 0  # k-fold cross-validation of the non-test patients (0: off)
    fold: int = 0  # the validation fold when data.folds > 0
    id_salt: str = "retina-pseudonym-v1"
    workers: int = 0
    image_dir: str = ""
    labels_csv: str = ""
    test_labels_csv: str = ""
    path_column: str = "path"
    label_column: str = "grade"
    patient_column: str = ""
    eye_column: str = ""
    split_column: str = ""
    gradable_column: str = ""  # folder layout: 0 where the graders could not grade a scan
    on_error: OnError = OnError.skip
    train_label: TrainLabel = TrainLabel.adjudicated
    sites: list[str] = field(default_factory=list)  # read only these sites (empty: all)
    paths_in_outputs: PathsInOutputs = PathsInOutputs.auto
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class PreprocessConfig:
    image_size: int = 128
    crop_to_fov: bool = True
    fov_threshold: float = 0.08
    ben_graham: bool = False
    clahe: bool = False
    clahe_clip_limit: float = 0.01
    gradability: bool = True
    cache_format: CacheFormat = CacheFormat.auto


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 192])
    dropout: float = 0.2
    num_classes: int = 5
    head: Head = Head.softmax
    weights: str = "none"
    # What a weights file is, for the report and model card (experiment=retfound_finetune
    # names RETFound's); its SHA-256 is written by the run that loads it.
    weights_source: str = ""
    weights_licence: str = ""
    weights_sha256: str = ""
    # Vision Transformers (retina.models.vit): the shape of model.name=vit (vit_base_patch16
    # and vit_large_patch16 have their own), and the stochastic depth of the last block.
    patch_size: int = 16
    width: int = 192
    depth: int = 4
    heads: int = 3
    drop_path: float = 0.0


@dataclass
class AugmentConfig:
    flip: bool = True
    rotation_degrees: float = 0.0
    crop_scale_min: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    rand_augment_layers: int = 0
    rand_augment_magnitude: float = 9.0
    rand_augment_magnitude_std: float = 0.5
    erase_probability: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


@dataclass
class OptimizerSpec:
    name: OptimizerName = OptimizerName.adam
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    clip_global_norm: float = 0.0
    layer_decay: float = 1.0  # a ViT's per-block rate decay (retina.training.layer_decay); 1: off


@dataclass
class OptimizerConfig(OptimizerSpec):
    """The optimizer of the whole model, or of the backbone when ``head`` is set."""

    head: OptimizerSpec | None = None


@dataclass
class ScheduleConfig:
    name: ScheduleName = ScheduleName.constant
    warmup_epochs: float = 0.0
    min_fraction: float = 0.0
    boundaries: list[float] = field(default_factory=list)
    factor: float = 0.1


@dataclass
class LossConfig:
    label_smoothing: float = 0.0
    class_weights: str = "none"


@dataclass
class TrainerConfig:
    """Where training runs: ``trainer.strategy`` picks the tf.distribute strategy."""

    strategy: Strategy = Strategy.auto
    cluster: Cluster = Cluster.auto
    slurm_port: int = 8888
    sync_batchnorm: bool = True
    cpu_devices: int = 1


@dataclass
class TrainLoopConfig:
    epochs: int = 14
    batch_size: int = 32
    precision: Precision = Precision.auto
    # Written by the run, not by you: the policy ``precision`` resolved to, which a resumed
    # run keeps (``auto`` may choose differently on other hardware).
    resolved_precision: str = ""
    precision_cache: str = ""
    deterministic: bool = False
    sampler: Sampler = Sampler.shuffle
    memory_cache_mb: int = 1024
    steps_per_execution: int = 1
    jit_compile: bool = False
    ema_decay: float = 0.0
    freeze_backbone_epochs: int = 0
    adaptation: Adaptation = Adaptation.finetune
    limit_train_scans: int = 0
    evaluate_test: bool = True
    on_nonfinite: OnNonfinite = OnNonfinite.stop
    tensorboard: bool = True
    log_every_steps: int = 10


@dataclass
class GradingConfig:
    """How an ordinal or regression head calls a grade (``retina.models.grading``)."""

    thresholds: GradeThresholds = GradeThresholds.fitted


@dataclass
class OperatingPointsConfig:
    """How the referral thresholds are chosen on the validation split after every epoch."""

    referable_threshold: float = 0.5
    target_sensitivity: float = 0.975
    target_specificity: float = 0.98


@dataclass
class QualityConfig:
    """The quality gate before every grade (``retina.quality``): the rules' floor, and what
    training fits for the learnt quality score and the not-a-fundus distance."""

    enabled: bool = True  # fit the learnt score and the not-a-fundus distance while training
    action: QualityAction = QualityAction.retake
    max_withheld_gradable: float = 0.01  # the learnt score's threshold: share of val's gradable
    max_rejected_fundus: float = 0.01  # the not-a-fundus threshold: share of val scans rejected
    components: int = 32  # principal components of the pooled features the gate keeps
    fit_scans: int = 1000  # training scans the fit reads (0: all)
    min_brightness: float = 20.0  # rule: "too dark" below this mean grey level of the field
    min_sharpness: float = 3.9  # rule: "too blurred" below this (retina.quality.measures)


@dataclass
class CheckpointConfig:
    max_to_keep: int = 3
    every_steps: int = 0
    keep_best: int = 3
    best_metric: ValidationMetric = ValidationMetric.referable_auc
    best_mode: BestMode = BestMode.max
    init_from: str = ""
    background: bool = True


@dataclass
class RunConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    operating_points: OperatingPointsConfig = field(default_factory=OperatingPointsConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)


@dataclass
class UncertaintyConfig:
    method: UncertaintyMethod = UncertaintyMethod.none
    samples: int = 20  # MC-dropout passes
    measure: UncertaintyMeasure = UncertaintyMeasure.predictive_entropy
    referral_fraction: float = 0.1  # share of validation scans the referral threshold refers
    calibrate: bool = True  # measure the referable uncertainty after a Platt fit on validation


@dataclass
class EnsembleConfig:
    members: list[str] = field(default_factory=list)  # run folders
    sweep_dir: str = ""  # or every finished job of a sweep
    output_dir: str = ""  # default <sweep_dir or first member's parent>/ensemble-eval


@dataclass
class EvaluateConfig:
    run_dir: str = ""
    checkpoint: str = "latest"
    split: Split = Split.test
    batch_size: int = 64
    tta: bool = False
    bootstrap_resamples: int = 2000
    seed: int = 0
    data: DataConfig | None = None
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    rebalance: bool = False  # with data=: resample it to the run's own test grade mix
    subgroups: list[str] = field(
        default_factory=lambda: ["site", "eye", "sex", "age_band", "image_quality"]
    )
    explain: bool = True  # Grad-CAM overlays of the failure gallery (report.html)


@dataclass
class PredictConfig:
    run_dir: str = MISSING
    input: str = MISSING
    checkpoint: str = "best"
    operating_point: OperatingPoint = OperatingPoint.default
    output_dir: str = ""
    batch_size: int = 64
    tta: bool = False
    paths_in_outputs: PathsInOutputs = PathsInOutputs.pseudonymise
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    explain: bool = False  # a Grad-CAM overlay of the referable score per scan


@dataclass
class ExplainConfig:
    run_dir: str = MISSING
    input: str = ""
    split: Split = Split.test
    checkpoint: str = "best"
    method: ExplainMethod = ExplainMethod.grad_cam
    targets: list[str] = field(default_factory=lambda: ["referable"])
    limit: int = 0
    sanity_checks: bool = False
    output_dir: str = ""
    batch_size: int = 32


@dataclass
class ExportConfig:
    run_dir: str = MISSING
    checkpoint: str = "best"
    format: ExportFormat = ExportFormat.saved_model
    output_dir: str = ""


def register_configs() -> None:
    """Registers the schemas (``run_schema``, ``evaluate_schema``, ...) for defaults lists,
    and the resolvers of Hydra's folders: ``retina.job_folder`` (sweep jobs) and
    ``retina.evaluation_log_dir`` (an evaluation's log)."""
    OmegaConf.register_new_resolver("retina.job_folder", job_folder_name, replace=True)
    OmegaConf.register_new_resolver("retina.evaluation_log_dir", evaluation_log_dir, replace=True)
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="predict_schema", node=PredictConfig)
    store.store(name="export_schema", node=ExportConfig)
    store.store(name="explain_schema", node=ExplainConfig)

"""Typed schemas for every config group, registered with Hydra's ConfigStore.

``conf/train.yaml`` and ``conf/evaluate.yaml`` start from these schemas, so a misspelt key
or a value of the wrong type fails at start-up with the key named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from retina.errors import ConfigError


@dataclass
class SyntheticConfig:
    n_patients: int = 400
    image_height: int = 256
    seed: int = 0
    jpeg_fraction: float = 0.25
    dicom_fraction: float = 0.15


@dataclass
class DataConfig:
    layout: str = "synthetic"
    root: str = "data/synthetic"
    cache_dir: str = "data/cache"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
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
    on_error: str = "skip"
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


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 192])
    dropout: float = 0.2
    num_classes: int = 5
    head: str = "grades"
    weights: str = "none"


@dataclass
class AugmentConfig:
    flip: bool = True
    rotation_degrees: float = 0.0
    crop_scale_min: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0


@dataclass
class OptimizerSpec:
    name: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    clip_global_norm: float = 0.0


@dataclass
class OptimizerConfig(OptimizerSpec):
    """The optimizer of the whole model, or of the backbone when ``head`` is set."""

    head: OptimizerSpec | None = None


@dataclass
class ScheduleConfig:
    name: str = "constant"
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

    strategy: str = "auto"
    cluster: str = "auto"
    slurm_port: int = 8888
    sync_batchnorm: bool = True
    cpu_devices: int = 1


@dataclass
class TrainLoopConfig:
    epochs: int = 14
    batch_size: int = 32
    precision: str = "auto"
    deterministic: bool = False
    sampler: str = "shuffle"
    memory_cache_mb: int = 1024
    steps_per_execution: int = 1
    jit_compile: bool = False
    ema_decay: float = 0.0
    freeze_backbone_epochs: int = 0
    limit_train_scans: int = 0
    referable_threshold: float = 0.5
    target_sensitivity: float = 0.975
    target_specificity: float = 0.98
    evaluate_test: bool = True
    on_nonfinite: str = "stop"
    tensorboard: bool = True
    log_every_steps: int = 10


@dataclass
class CheckpointConfig:
    max_to_keep: int = 3
    every_steps: int = 0
    keep_best: int = 3
    best_metric: str = "referable_auc"
    best_mode: str = "max"
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
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class EvaluateConfig:
    run_dir: str = MISSING
    checkpoint: str = "latest"
    split: str = "test"
    batch_size: int = 64
    tta: bool = False
    bootstrap_resamples: int = 2000
    seed: int = 0
    data: DataConfig | None = None


@dataclass
class PredictConfig:
    run_dir: str = MISSING
    input: str = MISSING
    checkpoint: str = "best"
    operating_point: str = "default"
    output_dir: str = ""
    batch_size: int = 64
    tta: bool = False


@dataclass
class ExportConfig:
    run_dir: str = MISSING
    checkpoint: str = "best"
    format: str = "saved_model"
    output_dir: str = ""


# Keys through which Hydra's instantiate would import and call Python.
INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def refuse_instantiate_keys(node, path: str = "") -> None:
    """Raises ConfigError naming the first ``_target_``-style key of a job config.

    Models, optimizers, schedules and losses come from registries by name; a config value
    must never be able to import and call arbitrary Python. (Hydra's own ``hydra.*`` node,
    launchers and callbacks, is not part of the job config.)
    """
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in INSTANTIATE_KEYS:
                raise ConfigError(
                    f"{where}={value!r}: configs cannot name Python objects to call. Choose "
                    "registered components by name instead (model.name, optimizer.name, "
                    "schedule.name, ...)."
                )
            refuse_instantiate_keys(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            refuse_instantiate_keys(value, f"{path}[{index}]")


def to_typed(cfg):
    """A composed job config as its dataclass, after refusing instantiate keys."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    refuse_instantiate_keys(container)
    return OmegaConf.to_object(cfg)


def register_configs() -> None:
    """Registers the schemas (``run_schema``, ``evaluate_schema``, ...) for defaults lists."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="predict_schema", node=PredictConfig)
    store.store(name="export_schema", node=ExportConfig)


def load_run_config(path) -> RunConfig:
    """Reads a run's saved ``config.yaml`` back into a validated ``RunConfig``."""
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path))
    return to_typed(merged)

"""Everything before the first step: data, model and state, restore (``open_session``).

Follows the restore order written down in ``retina.checkpoint``: dtype policy, model,
optimizers built, iterator, then the newest intact checkpoint read and verified. Under a
strategy, every worker builds the same state in ``strategy.scope()`` and restores the
chief's checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf
from omegaconf import OmegaConf
from tensorflow.python.framework import config as tf_config

from retina.checkpoint.files import has_checkpoints
from retina.checkpoint.read import newest_has_quality, resolve_checkpoint, restore_weights
from retina.checkpoint.state import TrainingState
from retina.checkpoint.store import CheckpointStore
from retina.config import Adaptation, RunConfig
from retina.data.fundus import surround_value
from retina.data.label_tables import MANIFEST_COLUMNS
from retina.data.mixing import Mixing
from retina.data.pipeline import StreamOptions, make_train_dataset
from retina.data.prepare import prepare_run_data, prepare_ungradable
from retina.data.sources import training_grades
from retina.errors import ConfigError
from retina.files import text_sha256
from retina.inference.outputs import make_output_step
from retina.models import build_model, pretrained_digest, without_pretrained
from retina.models.heads import LOGITS_LAYER, num_outputs
from retina.quality.fit import fit_run_gate, unfitted_gate
from retina.run_dir import CONFIG_FILE, load_run_config
from retina.training.distribute import (
    Placement,
    adapt_to_replicas,
    check_batch_size,
    wait_for_all_workers,
)
from retina.training.ema import WeightAverage
from retina.training.losses import make_loss
from retina.training.optimizers import (
    HEAD_PREFIX,
    RateSetup,
    build_all,
    build_optimizers,
    set_backbone_trainable,
    variable_groups,
)
from retina.training.precision import apply_precision
from retina.training.steps import has_loss_scaling, make_train_function
from retina.training.tensorboard import TensorBoardLog
from retina.training.validation import predict_validation

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Session:
    """What the loop works with once data, model and state are in place."""

    cfg: RunConfig
    run_dir: Path
    placement: Placement
    state: TrainingState  # everything the checkpoint holds
    store: CheckpointStore
    groups: dict  # optimizer name -> the variables it updates
    loss: Callable  # (grades, logits) -> scalar
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    steps_per_epoch: int
    restored_from: Path | None
    tensorboard: TensorBoardLog | None = None
    quality_rows: pd.DataFrame | None = None  # the graders' ungradable train and val scans
    _functions: dict = field(default_factory=dict)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run directory (always, unless multi-worker)."""
        return self.placement.is_chief

    @property
    def iterator(self) -> tf.data.Iterator:
        return self.state.iterator

    @property
    def total_steps(self) -> int:
        return self.cfg.train.epochs * self.steps_per_epoch

    @property
    def loss_scaling(self) -> bool:
        return has_loss_scaling(self.state.optimizers)

    def train_function(self, epoch: int):
        """The compiled steps for ``epoch``: head only while the backbone is frozen, the
        last linear layer only for a linear probe (``train.adaptation``).

        Trainability is set before every use because tracing reads it (which variables get
        gradients, and whether a frozen BatchNormalization normalizes in inference mode).
        """
        probe = self.cfg.train.adaptation == Adaptation.linear_probe
        frozen = probe or epoch < self.cfg.train.freeze_backbone_epochs
        set_backbone_trainable(self.state.model, not frozen, LOGITS_LAYER if probe else HEAD_PREFIX)
        if frozen not in self._functions:
            self._functions[frozen] = make_train_function(
                self.state,
                groups=self.groups,
                loss=self.loss,
                placement=self.placement,
                head=self.cfg.model.head,
                jit_compile=self.cfg.train.jit_compile,
                mixing=Mixing.from_config(self.cfg.augment, self.cfg.seed),
            )
        return self._functions[frozen]

    def saved_weights(self):
        """A context in which the model holds the weights a checkpoint saves: the weight
        averages when ``train.ema_decay`` keeps them."""
        ema = self.state.ema
        return ema.applied() if ema is not None else contextlib.nullcontext()

    def fit_quality(self) -> dict | None:
        """The quality gate fitted on the weights about to be saved (``retina.quality``);
        None when the state keeps none."""
        if self.state.quality is None:
            return None
        rows = {"train": self.train_rows, "val": self.val_rows, "ungradable": self.quality_rows}
        with self.saved_weights():
            return fit_run_gate(
                self.state.model, rows, self.cfg.quality, 2 * self.cfg.train.batch_size
            )

    def validate(self) -> tuple:
        """(grades, the model's outputs) of the validation split, sharded across the
        replicas, with the weight averages when ``train.ema_decay`` keeps them."""
        if "predict" not in self._functions:
            self._functions["predict"] = make_output_step(self.state.model)
        rows = self.val_rows
        with self.saved_weights():
            return predict_validation(
                self.placement,
                self.state.model,
                self._functions["predict"],
                rows["cache_path"].tolist(),
                rows["grade"].tolist(),
                2 * self.cfg.train.batch_size,
            )


def open_session(cfg: RunConfig, run_dir: str | Path, placement: Placement | None = None):
    """Builds data, model, optimizers and iterator, then restores the latest checkpoint."""
    placement = placement or Placement(tf.distribute.get_strategy())
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(cfg.train)
    resuming = has_checkpoints(run_dir)
    # Restore order 1: the policy first; a resumed run keeps the one it started with. Seeded
    # after it: a precision measurement builds models that draw from the seeded generators.
    saved = saved_config(run_dir) if resuming else None
    policy = apply_precision(cfg, saved.train.resolved_precision if saved else "", placement)
    keras.utils.set_random_seed(cfg.seed)
    cfg = replace(
        cfg,
        train=replace(cfg.train, resolved_precision=policy),
        model=replace(cfg.model, weights_sha256=initial_weights_digest(cfg, saved)),
    )

    gated = cfg.quality.enabled and (not resuming or newest_has_quality(run_dir))
    if cfg.quality.enabled and not gated:
        log.info("Resuming a run saved without a quality gate: it goes on without one.")

    # Data: the chief prepares it, the other workers read what it wrote.
    manifest, quality_rows = prepare_data(cfg, run_dir, placement, gated)
    train_rows, val_rows = (manifest[manifest["split"] == s] for s in ("train", "val"))
    if cfg.train.limit_train_scans:
        train_rows = train_rows.head(cfg.train.limit_train_scans)
    steps_per_epoch = count_steps_per_epoch(len(train_rows), cfg.train.batch_size)
    check_batch_size(cfg.train.batch_size, placement.num_replicas)

    # Model and state: restore order 1-3. A resumed run's weights all come from the
    # checkpoint, so pretrained ones are neither loaded nor fetched.
    with placement.strategy.scope():
        state, groups = build_training_state(
            cfg,
            train_rows,
            steps_per_epoch,
            policy,
            resuming=resuming,
            placement=placement,
            quality=gated,
        )

    # Restore: order 4-5; or, for a new run, the weights of checkpoint.init_from.
    store = CheckpointStore(
        run_dir,
        state,
        describe_run(cfg, manifest),
        max_to_keep=cfg.checkpoint.max_to_keep,
        best_metric=cfg.checkpoint.best_metric,
        best_mode=cfg.checkpoint.best_mode,
        background=cfg.checkpoint.background,
        chief=placement.is_chief,
    )
    restored_from = store.restore()
    if restored_from is None and cfg.checkpoint.init_from:
        source = resolve_checkpoint(cfg.checkpoint.init_from)
        restore_weights(state.model, source)
        log.info("Initialized the model's weights from %s (weights only).", source)
    log.info(
        "Model %s with %s parameters; optimizers %s; %s.",
        cfg.model.name,
        f"{state.model.count_params():,}",
        ", ".join(state.optimizers),
        placement.describe(),
    )
    return Session(
        cfg=cfg,
        run_dir=run_dir,
        placement=placement,
        state=state,
        store=store,
        groups=groups,
        loss=make_loss(
            cfg.loss, cfg.model.head, num_outputs(cfg.model), training_grades(train_rows)
        ),
        train_rows=train_rows,
        val_rows=val_rows,
        steps_per_epoch=steps_per_epoch,
        restored_from=restored_from,
        tensorboard=TensorBoardLog(run_dir, cfg)
        if cfg.train.tensorboard and placement.is_chief
        else None,
        quality_rows=quality_rows,
    )


def build_training_state(
    cfg: RunConfig,
    train_rows: pd.DataFrame,
    steps_per_epoch: int,
    policy: str,
    *,
    resuming: bool = False,
    placement: Placement | None = None,
    quality: bool = False,
) -> tuple[TrainingState, dict]:
    """A fresh (unrestored) ``TrainingState`` (model, optimizers built, weight average,
    training stream) and the variable group of each optimizer. Call inside
    ``placement.strategy.scope()``."""
    placement = placement or Placement(tf.distribute.get_strategy())
    model = build_model(
        without_pretrained(cfg.model) if resuming else cfg.model, cfg.preprocess.image_size
    )
    if placement.num_replicas > 1:
        adapt_to_replicas(model, cfg.trainer.sync_batchnorm)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    total_steps = cfg.train.epochs * steps_per_epoch
    rates = RateSetup(cfg.schedule, steps_per_epoch, total_steps, tf.Variable(1.0), step)
    optimizers = build_optimizers(cfg.optimizer, policy, rates)
    groups = variable_groups(model, list(optimizers))
    build_all(optimizers, groups, model)  # restore order 2
    stream = StreamOptions(
        cfg.train.sampler,
        cfg.train.memory_cache_mb,
        cfg.train.deterministic,
        placement.worker_index,
        placement.num_workers,
        background=surround_value(cfg.preprocess),
    )
    dataset = make_train_dataset(
        train_rows["cache_path"].tolist(),
        training_grades(train_rows).to_numpy(),
        cfg.train.batch_size,
        cfg.seed,
        cfg.augment,
        stream,
    )
    state = TrainingState(
        model=model,
        optimizers=optimizers,
        iterator=iter(dataset),  # restore order 3
        keep_best=cfg.checkpoint.keep_best,
        lr_scale=rates.scale,
        ema=WeightAverage(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None,
        step=step,
        head=cfg.model.head,
        quality=unfitted_gate(model, cfg.quality) if quality else None,
    )
    return state, groups


def count_steps_per_epoch(train_scans: int, batch_size: int) -> int:
    steps = train_scans // batch_size
    if steps == 0:
        raise ConfigError(
            f"train.batch_size={batch_size} exceeds the {train_scans} training scans; lower it."
        )
    return steps


def prepare_data(cfg: RunConfig, run_dir: Path, placement: Placement, quality: bool):
    """(manifest, the graders' ungradable training and validation scans when ``quality``).
    The chief generates, caches and splits the data; the other workers wait for it, then
    read what it wrote (the run's manifest, the cache), so no file is written twice."""

    def prepare():
        manifest = prepare_run_data(cfg, run_dir)
        return manifest, prepare_ungradable(cfg, run_dir, ("train", "val")) if quality else None

    prepared = prepare() if placement.is_chief else None
    wait_for_all_workers(placement)
    return prepared if prepared is not None else prepare()


def set_determinism(train_cfg) -> None:
    """TF op determinism on or off as configured; the switch is process-wide, so a run in
    the same process as an earlier deterministic one must turn it back off."""
    if train_cfg.deterministic and train_cfg.jit_compile:
        raise ConfigError(
            "train.deterministic=true and train.jit_compile=true cannot be combined: XLA has "
            "no deterministic kernel for some gradients (MaxPool among them). Choose one."
        )
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()  # no public API for this in TF 2.21


def with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """Data paths made absolute, so the saved config works from any working directory."""
    data = replace(
        cfg.data,
        root=str(Path(cfg.data.root).resolve()),
        cache_dir=str(Path(cfg.data.cache_dir).resolve()),
    )
    return replace(cfg, data=data)


def describe_run(cfg: RunConfig, manifest: pd.DataFrame) -> dict:
    """The facts every checkpoint sidecar records about the run that wrote it."""
    model_config = {f"model.{k}": v for k, v in asdict(cfg.model).items()}
    model_config["preprocess.image_size"] = cfg.preprocess.image_size
    model_config["optimizer"] = OmegaConf.to_container(OmegaConf.structured(cfg.optimizer))
    return {
        "config_hash": text_sha256(OmegaConf.to_yaml(OmegaConf.structured(cfg))),
        "manifest_hash": text_sha256(manifest[MANIFEST_COLUMNS].to_csv(index=False)),
        "model_config": model_config,
    }


def saved_config(run_dir: Path) -> RunConfig | None:
    """The config a run being resumed saved (None before its first checkpoint verified)."""
    saved = run_dir / CONFIG_FILE
    return load_run_config(saved) if saved.is_file() else None


def initial_weights_digest(cfg: RunConfig, saved: RunConfig | None) -> str:
    """The SHA-256 of the weights file the run started from: hashed by a new run, kept
    from the saved config by a resumed one (which does not read the file again)."""
    if saved is not None:
        return saved.model.weights_sha256
    digest = pretrained_digest(cfg.model)
    if digest:
        log.info("model.weights file sha256 %s.", digest)
    return digest

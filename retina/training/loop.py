"""The custom training loop: ``train(cfg, run_dir)`` is everything ``python -m retina.train``
does, callable from tests and notebooks with a plain ``RunConfig``."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf
from omegaconf import OmegaConf
from tensorflow.python.framework import config as tf_config
from tqdm import tqdm

from retina.checkpoint import (
    LATEST_DIR,
    SIDECAR_SUFFIX,
    CheckpointStore,
    RunLock,
    TrainingState,
    fault_point,
    find_checkpoint,
    resolve_checkpoint,
    restore_weights,
    weights_fingerprint,
)
from retina.config import RunConfig
from retina.data.pipeline import StreamOptions, make_eval_dataset, make_train_dataset
from retina.data.prepare import prepare_run_data
from retina.data.sources import MANIFEST_COLUMNS
from retina.errors import ConfigError, TrainingDiverged
from retina.metrics import (
    clinical_metrics,
    is_referable,
    referable_probability,
    threshold_for_sensitivity,
    threshold_for_specificity,
)
from retina.models import build_model, num_outputs, without_pretrained
from retina.sweep import write_status
from retina.training.distribute import (
    Placement,
    adapt_to_replicas,
    build_placement,
    check_batch_size,
    wait_for_all_workers,
)
from retina.training.ema import WeightAverage
from retina.training.losses import make_loss
from retina.training.optimizers import (
    RateSetup,
    build_all,
    build_optimizers,
    set_backbone_trainable,
    variable_groups,
)
from retina.training.precision import apply_precision, uses_loss_scaling
from retina.training.preemption import (
    ClusterStopSignal,
    Preempted,
    StopSignal,
    WorkerLost,
)
from retina.training.steps import (
    StepParts,
    make_predict_step,
    make_train_function,
    predict_dataset,
)
from retina.training.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"
STEPS_FILE = "steps.csv"
MAX_ROLLBACKS = 3
# What a collective op raises when a peer of a multi-worker run is gone.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
)


@dataclass
class Session:
    """What the loop works with once data, model and state are in place."""

    state: TrainingState
    store: CheckpointStore
    iterator: tf.data.Iterator
    val_dataset: tf.data.Dataset
    steps_per_epoch: int
    restored_from: Path | None
    parts: StepParts
    train_rows: pd.DataFrame
    predict_step: object
    tensorboard: TensorBoardLog | None = None
    freeze_epochs: int = 0
    _functions: dict = field(default_factory=dict)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run directory (always, unless multi-worker)."""
        return self.parts.placement.is_chief

    def train_function(self, epoch: int):
        """The compiled steps for ``epoch``: head only while the backbone is frozen.

        Trainability is set before every use because tracing reads it (which variables get
        gradients, and whether a frozen BatchNormalization normalizes in inference mode).
        """
        frozen = epoch < self.freeze_epochs
        set_backbone_trainable(self.parts.model, not frozen)
        if frozen not in self._functions:
            self._functions[frozen] = make_train_function(self.parts)
        return self._functions[frozen]

    def validate(self) -> tuple:
        """(grades, probabilities) of the validation split, with the weight averages when
        ``train.ema_decay`` keeps them."""
        if self.parts.ema is None:
            return predict_dataset(self.predict_step, self.val_dataset)
        with self.parts.ema.applied():
            return predict_dataset(self.predict_step, self.val_dataset)


def with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """Data paths made absolute, so the saved config works from any working directory."""
    data = replace(
        cfg.data,
        root=str(Path(cfg.data.root).resolve()),
        cache_dir=str(Path(cfg.data.cache_dir).resolve()),
    )
    return replace(cfg, data=data)


def save_run_config(cfg: RunConfig, run_dir: Path) -> None:
    OmegaConf.save(OmegaConf.structured(cfg), run_dir / CONFIG_FILE)


def describe_run(cfg: RunConfig, manifest: pd.DataFrame) -> dict:
    """The facts every checkpoint sidecar records about the run that wrote it."""
    config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    manifest_csv = manifest[MANIFEST_COLUMNS].to_csv(index=False)
    model_config = {f"model.{k}": v for k, v in asdict(cfg.model).items()}
    model_config["preprocess.image_size"] = cfg.preprocess.image_size
    model_config["optimizer"] = OmegaConf.to_container(OmegaConf.structured(cfg.optimizer))
    return {
        "config_hash": hashlib.sha256(config_yaml.encode()).hexdigest(),
        "manifest_hash": hashlib.sha256(manifest_csv.encode()).hexdigest(),
        "model_config": model_config,
    }


def open_session(cfg: RunConfig, run_dir: Path, placement: Placement | None = None) -> Session:
    """Builds data, model, optimizers and iterator, then restores the latest checkpoint.

    Follows the restore order documented in ``retina.checkpoint``; under a strategy, every
    worker builds the same state in ``strategy.scope()`` and restores the chief's checkpoint.
    """
    placement = placement or Placement(tf.distribute.get_strategy())
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    set_determinism(cfg.train)
    policy = apply_precision(cfg.train.precision)
    manifest = _prepare_data(cfg, run_dir, placement)
    train_rows, val_rows = (manifest[manifest["split"] == s] for s in ("train", "val"))
    if cfg.train.limit_train_scans:
        train_rows = train_rows.head(cfg.train.limit_train_scans)
    steps_per_epoch = len(train_rows) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} exceeds the "
            f"{len(train_rows)} training scans; lower it."
        )
    check_batch_size(cfg.train.batch_size, placement.num_replicas)
    resuming = any((Path(run_dir) / LATEST_DIR).glob(f"*{SIDECAR_SUFFIX}"))
    with placement.strategy.scope():
        state, parts = build_training_state(
            cfg, train_rows, steps_per_epoch, policy, resuming, placement
        )
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
    val_dataset = make_eval_dataset(
        val_rows["cache_path"].tolist(), val_rows["grade"].tolist(), 2 * cfg.train.batch_size
    )
    log.info(
        "Precision policy %s; model %s with %s parameters; optimizers %s; %s.",
        policy,
        cfg.model.name,
        f"{state.model.count_params():,}",
        ", ".join(state.optimizers),
        placement.describe(),
    )
    return Session(
        state,
        store,
        state.iterator,
        val_dataset,
        steps_per_epoch,
        restored_from,
        parts,
        train_rows,
        make_predict_step(state.model),
        TensorBoardLog(run_dir) if cfg.train.tensorboard and placement.is_chief else None,
        cfg.train.freeze_backbone_epochs,
    )


def _prepare_data(cfg: RunConfig, run_dir: Path, placement: Placement) -> pd.DataFrame:
    """The chief generates, caches and splits the data; the other workers wait for it,
    then read what it wrote (the run's manifest, the cache), so no file is written twice."""
    manifest = prepare_run_data(cfg, run_dir) if placement.is_chief else None
    wait_for_all_workers(placement)
    return manifest if manifest is not None else prepare_run_data(cfg, run_dir)


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


def build_training_state(
    cfg: RunConfig,
    train_rows,
    steps_per_epoch: int,
    policy: str,
    resuming: bool = False,
    placement: Placement | None = None,
):
    """Model, optimizers, loss, weight averages and training stream, as a fresh
    (unrestored) ``TrainingState`` and the ``StepParts`` that train it. When ``resuming``,
    the checkpoint replaces every weight, so pretrained ones are neither loaded nor fetched.
    Call inside ``placement.strategy.scope()``."""
    placement = placement or Placement(tf.distribute.get_strategy())
    model = build_model(
        without_pretrained(cfg.model) if resuming else cfg.model, cfg.preprocess.image_size
    )
    if placement.num_replicas > 1:
        adapt_to_replicas(model, cfg.trainer.sync_batchnorm)
    rates = RateSetup(
        cfg.schedule, steps_per_epoch, cfg.train.epochs * steps_per_epoch, tf.Variable(1.0)
    )
    optimizers = build_optimizers(cfg.optimizer, policy, rates)
    groups = variable_groups(model, list(optimizers))
    build_all(optimizers, groups)
    ema = WeightAverage(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    grades = train_rows["grade"].to_numpy()
    stream = StreamOptions(
        cfg.train.sampler,
        cfg.train.memory_cache_mb,
        cfg.train.deterministic,
        placement.worker_index,
        placement.num_workers,
    )
    dataset = make_train_dataset(
        train_rows["cache_path"].tolist(),
        grades,
        cfg.train.batch_size,
        cfg.seed,
        cfg.augment,
        stream,
    )
    state = TrainingState(
        model, optimizers, iter(dataset), cfg.checkpoint.keep_best, rates.scale, ema
    )
    parts = StepParts(
        model,
        optimizers,
        groups,
        make_loss(cfg.loss, cfg.model.head, num_outputs(cfg.model), grades),
        state,
        uses_loss_scaling(policy),
        cfg.model.head,
        ema,
        cfg.train.jit_compile,
        placement,
    )
    return state, parts


def train(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Trains (or resumes) the run in ``run_dir``; returns the last validation metrics, the
    best value of ``checkpoint.best_metric`` under ``best``, and the held-out test metrics
    under ``test`` when ``train.evaluate_test`` is on.

    Raises:
        Preempted: after saving, when SIGTERM or SIGINT arrived.
        TrainingDiverged: the loss became non-finite (nothing non-finite was saved).
    """
    run_dir = Path(run_dir)
    cfg = with_absolute_paths(cfg)
    started = time.perf_counter()
    placement = build_placement(cfg.trainer)  # first: multi-worker precedes other TF work
    if not placement.is_chief:
        _log_to_worker_file(run_dir, placement.worker_index)
    with RunLock(run_dir) if placement.is_chief else contextlib.nullcontext():
        session = open_session(cfg, run_dir, placement)
        if session.chief:
            save_run_config(cfg, run_dir)  # only once the restore verified against this config
        already_done = _announce(session, cfg)
        try:
            with _stop_signal(session) as stop:
                _train_epochs(session, cfg, run_dir, stop)
        finally:
            session.store.close()  # a checkpoint being written in the background completes
    log.info(
        "Model weights sha256 %s (worker %d).",
        weights_fingerprint(session.state.model),
        session.parts.placement.worker_index,
    )
    result = session.state.metric_values()
    # The ledger is sorted best first: the value the best/ checkpoint was ranked by.
    result["best"] = {
        "metric": cfg.checkpoint.best_metric,
        "value": float(session.state.best_values.numpy()[0]),
    }
    if not session.chief:
        return result
    if cfg.train.evaluate_test:
        result["test"] = _evaluate_test(run_dir, reuse=already_done)
    write_status(
        run_dir,
        status="finished",
        resumed=session.restored_from is not None and not already_done,
        seconds=round(time.perf_counter() - started, 1),
        ended=time.time(),
    )
    return result


def _log_to_worker_file(run_dir: Path, index: int) -> None:
    """A non-chief worker logs to ``<run_dir>/worker<index>.log``, not into the chief's log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()
        replacement = logging.FileHandler(run_dir / f"worker{index}.log")
        replacement.setFormatter(handler.formatter)
        root.addHandler(replacement)


def _stop_signal(session: Session):
    """What turns SIGTERM into a save and a clean exit: tf.distribute's preemption handler
    across workers, our own signal flag in a single process."""
    if session.parts.placement.multi_worker:
        return ClusterStopSignal(
            session.parts.placement.strategy,
            session.store.save,
            lambda: int(session.state.step.numpy()),
        )
    return StopSignal()


def _evaluate_test(run_dir: Path, reuse: bool) -> dict:
    """The held-out evaluation of the last checkpoint; a run that had nothing left to train
    (a finished job of a re-launched sweep) keeps the one it already wrote."""
    from retina.evaluation import EVAL_DIR, METRICS_FILE, evaluate_run

    written = run_dir / EVAL_DIR / f"{find_checkpoint(run_dir).name}-test" / METRICS_FILE
    if reuse and written.is_file():
        log.info("Already evaluated: %s", written)
        return json.loads(written.read_text())
    return evaluate_run(run_dir)


def _announce(session: Session, cfg: RunConfig) -> bool:
    """Logs where training starts; True when the run has nothing left to train."""
    if session.restored_from:
        log.info("Restored from %s", session.restored_from)
    else:
        log.info("Initializing from scratch.")
    start, total = int(session.state.step.numpy()), cfg.train.epochs * session.steps_per_epoch
    if start >= total:
        log.info("Nothing to do: step %d already reached train.epochs=%d.", start, cfg.train.epochs)
        return True
    log.info(
        "Training steps %d..%d (%d steps per epoch).", start + 1, total, session.steps_per_epoch
    )
    return False


def _train_epochs(session: Session, cfg: RunConfig, run_dir: Path, stop: StopSignal) -> None:
    """Runs epochs until ``train.epochs``; the step counter, not a Python loop index, says
    where training is, so mid-epoch resumes and rollbacks need no special case."""
    state, spe = session.state, session.steps_per_epoch
    # Only the chief keeps the step log; the others write theirs to the null device.
    steps_path = run_dir / STEPS_FILE if session.chief else Path(os.devnull)
    steps_log = StepLog(steps_path, restored_step=int(state.step.numpy()))
    rollbacks = 0
    try:
        while (step := int(state.step.numpy())) < cfg.train.epochs * spe:
            try:
                _train_epoch(session, cfg, run_dir, step, steps_log, stop)
            except TrainingDiverged as error:
                if cfg.train.on_nonfinite != "rollback" or rollbacks == MAX_ROLLBACKS:
                    raise
                rollbacks += 1
                _roll_back(session, error, steps_log)
    finally:
        steps_log.close()


def _train_epoch(session, cfg: RunConfig, run_dir: Path, step: int, steps_log, stop) -> None:
    """From ``step + 1`` to the end of its epoch, then validate, rank and save."""
    state, spe = session.state, session.steps_per_epoch
    epoch = step // spe
    summary = run_steps(session, cfg, step + 1, (epoch + 1) * spe, steps_log, stop)
    grades, probabilities = session.validate()
    metrics = clinical_metrics(grades, probabilities, cfg.train.referable_threshold)
    state.record_metrics(metrics)
    state.record_operating_points(choose_operating_points(grades, probabilities, cfg.train))
    state.epoch.assign(epoch + 1)
    path = session.store.save(best=session.store.rank(metrics))
    _log_epoch(epoch, cfg.train.epochs, summary, metrics, path)
    if session.chief:
        _append_history(run_dir, epoch, step + 1, summary, metrics, state)
    if session.tensorboard:
        session.tensorboard.epoch_end(int(state.step.numpy()), summary, metrics)
    if stop.received:
        raise Preempted(stop.received, (epoch + 1) * spe, str(path))


def choose_operating_points(grades, probabilities, train_cfg) -> dict[str, float]:
    """Referral thresholds on the validation scores: the configured default, and the ones
    reaching ``train.target_sensitivity`` and ``train.target_specificity``."""
    positive, scores = is_referable(grades), referable_probability(probabilities)
    return {
        "default": train_cfg.referable_threshold,
        "high_sensitivity": threshold_for_sensitivity(
            positive, scores, train_cfg.target_sensitivity
        ),
        "high_specificity": threshold_for_specificity(
            positive, scores, train_cfg.target_specificity
        ),
    }


def _chunk_size(step: int, last: int, cfg: RunConfig) -> int:
    """Steps for the next compiled call: ``train.steps_per_execution``, cut short at the
    epoch's end and at the next ``checkpoint.every_steps`` save."""
    count = min(max(cfg.train.steps_per_execution, 1), last - step)
    every = cfg.checkpoint.every_steps
    if every:
        count = min(count, every - step % every)
    return count


def run_steps(session, cfg: RunConfig, first: int, last: int, steps_log, stop) -> dict:
    """Steps ``first..last`` (a whole epoch, or its rest after a mid-epoch resume)."""
    state, every, batch = session.state, cfg.checkpoint.every_steps, cfg.train.batch_size
    if (first - 1) % session.steps_per_epoch == 0:
        state.reset_epoch_totals()
    run = session.train_function((first - 1) // session.steps_per_epoch)
    started, skipped, step = time.perf_counter(), 0, first - 1
    epoch_label = f"epoch {(first - 1) // session.steps_per_epoch + 1}/{cfg.train.epochs}"
    bar = tqdm(total=last - first + 1, desc=epoch_label, unit="step", mininterval=1.0, leave=False)
    while step < last:
        count = _chunk_size(step, last, cfg)
        losses, accuracies, applied = _run_chunk(session, run, count)
        for loss, accuracy, ok in zip(losses.tolist(), accuracies.tolist(), applied, strict=True):
            step += 1
            if not math.isfinite(loss) and not session.parts.loss_scaling:
                raise TrainingDiverged(
                    f"step {step}: the loss is {loss}; stopped without saving it. The last "
                    f"good checkpoint is {session.store.latest.prefixes()[:1] or 'none'}. "
                    "Lower optimizer.learning_rate, or set train.on_nonfinite=rollback."
                )
            skipped += not ok  # the loss-scale optimizer skipped it and halved its scale
            steps_log.write(step, loss, accuracy, skipped=not ok)
            fault_point("step", step)
        rate = (step - first + 1) * batch / (time.perf_counter() - started)
        bar.update(count)
        bar.set_postfix(loss=f"{state.epoch_means()['loss']:.4f}", img_s=f"{rate:.0f}")
        if session.tensorboard:
            session.tensorboard.steps(step, losses, state.optimizers, rate, cfg.train)
        if step != last and (stop.received or (every and step % every == 0)):
            path = session.store.save()
            if stop.received:
                raise Preempted(stop.received, step, str(path))
        stop.poll()
    bar.close()
    if skipped:
        log.warning(
            "%d of %d steps skipped: non-finite gradients under mixed precision (the loss "
            "scale was halved each time; weights and BatchNorm statistics left unchanged).",
            skipped,
            last - first + 1,
        )
    seconds = time.perf_counter() - started
    return {
        **state.epoch_means(),
        "images_per_s": (last - first + 1) * batch / seconds,
        "seconds": seconds,
        "skipped_steps": skipped,
    }


def _run_chunk(session: Session, run, count: int) -> tuple:
    """One compiled call; under multi-worker, a lost peer becomes ``WorkerLost``."""
    try:
        return tuple(t.numpy() for t in run(session.iterator, count))
    except PEER_ERRORS as error:
        if not session.parts.placement.multi_worker:
            raise
        latest = session.store.latest.prefixes()
        where = str(latest[0]) if latest else "the start"
        raise WorkerLost(_peer_failure(error.message), where) from None


def _peer_failure(message: str) -> str:
    """The useful line of a collective op's error: which task stopped, if it says."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line, following in zip(lines, lines[1:], strict=False):
        if "stopped sending heartbeats" in line:
            return f"no heartbeat from {following}"
    return lines[-1][:200] if lines else "no detail"


def _roll_back(session: Session, error: TrainingDiverged, steps_log: StepLog) -> None:
    """Restores the last good checkpoint and halves every learning rate."""
    path = session.store.restore()
    if path is None:
        raise error
    session.state.lr_scale.assign(session.state.lr_scale * 0.5)
    steps_log.truncate(int(session.state.step.numpy()))
    log.warning("%s Rolled back to %s with the learning rates halved.", error, path)


class StepLog:
    """``steps.csv``: one row per training step (step, loss, accuracy, skipped), kept consistent
    with the checkpoint: rows past the restored step are dropped on resume."""

    def __init__(self, path: Path, restored_step: int):
        self.path = path
        self._handle = None
        self.truncate(restored_step)

    def truncate(self, last_step: int) -> None:
        self.close()
        rows = []
        if self.path.exists():
            with open(self.path, newline="") as handle:
                rows = [r for r in csv.reader(handle) if r and r[0] != "step"]
            rows = [r for r in rows if int(r[0]) <= last_step]
        with open(self.path, "w", newline="") as handle:
            csv.writer(handle).writerows([["step", "loss", "accuracy", "skipped"], *rows])
        # Line-buffered: each row reaches the file as it is written (a SIGKILL loses none),
        # without opening the file on every training step.
        self._handle = open(self.path, "a", buffering=1)

    def write(self, step: int, loss: float, accuracy: float, skipped: bool = False) -> None:
        self._handle.write(f"{step},{loss!r},{accuracy!r},{int(skipped)}\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _log_epoch(epoch: int, epochs: int, summary: dict, metrics: dict, path) -> None:
    log.info(
        "epoch %d/%d  loss %.4f  acc %.3f  %.0f img/s | val AUC %.3f  sens %.3f  spec %.3f  "
        "kappa %.3f | saved %s",
        epoch + 1,
        epochs,
        summary["loss"],
        summary["accuracy"],
        summary["images_per_s"],
        metrics["referable_auc"],
        metrics["sensitivity"],
        metrics["specificity"],
        metrics["quadratic_weighted_kappa"],
        Path(path).name,
    )


def _append_history(run_dir: Path, epoch: int, first: int, summary, metrics, state) -> None:
    row = {"epoch": epoch + 1, "first_step": first, "last_step": int(state.step.numpy())}
    row.update(summary)
    row.update({f"val_{k}": metrics[k] for k in state.metrics})
    row.update({f"threshold_{k}": float(v.numpy()) for k, v in state.operating_points.items()})
    path = run_dir / HISTORY_FILE
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(
            {
                k: round(v, 6) if isinstance(v, float) and math.isfinite(v) else v
                for k, v in row.items()
            }
        )


def read_history(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / HISTORY_FILE)

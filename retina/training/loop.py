"""The custom training loop: ``train(cfg, run_dir)`` is everything ``python -m retina.train``
does, callable from tests and notebooks with a plain ``RunConfig``."""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf
from omegaconf import OmegaConf
from tqdm import tqdm

from retina.checkpoint import (
    CheckpointStore,
    RunLock,
    TrainingState,
    fault_point,
    resolve_checkpoint,
    restore_weights,
)
from retina.config import RunConfig
from retina.data.pipeline import make_eval_dataset, make_train_dataset
from retina.data.prepare import prepare_run_data
from retina.data.sources import MANIFEST_COLUMNS
from retina.errors import ConfigError, TrainingDiverged
from retina.metrics import clinical_metrics
from retina.models import build_model
from retina.training.optimizers import build_all, build_optimizers, variable_groups
from retina.training.precision import apply_precision, uses_loss_scaling
from retina.training.preemption import Preempted, StopSignal
from retina.training.steps import make_predict_step, make_train_step, predict_dataset

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"
STEPS_FILE = "steps.csv"
MAX_ROLLBACKS = 3


@dataclass
class Session:
    """What the loop works with once data, model and state are in place."""

    state: TrainingState
    store: CheckpointStore
    iterator: tf.data.Iterator
    val_dataset: tf.data.Dataset
    steps_per_epoch: int
    restored_from: Path | None
    train_step: object
    predict_step: object
    loss_scaling: bool


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


def open_session(cfg: RunConfig, run_dir: Path) -> Session:
    """Builds data, model, optimizers and iterator, then restores the latest checkpoint.

    Follows the restore order documented in ``retina.checkpoint``.
    """
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = apply_precision(cfg.train.precision)
    manifest = prepare_run_data(cfg, run_dir)
    train_rows, val_rows = (manifest[manifest["split"] == s] for s in ("train", "val"))
    steps_per_epoch = len(train_rows) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} exceeds the "
            f"{len(train_rows)} training scans; lower it."
        )
    model = build_model(cfg.model, cfg.preprocess.image_size)
    optimizers = build_optimizers(cfg.optimizer, policy)
    groups = variable_groups(model, list(optimizers))
    build_all(optimizers, groups)
    iterator = iter(
        make_train_dataset(
            train_rows["cache_path"].tolist(),
            train_rows["grade"].tolist(),
            cfg.train.batch_size,
            seed=cfg.seed,
            augment=cfg.train.augment,
        )
    )
    state = TrainingState(model, optimizers, iterator, keep_best=cfg.checkpoint.keep_best)
    store = CheckpointStore(
        run_dir,
        state,
        describe_run(cfg, manifest),
        max_to_keep=cfg.checkpoint.max_to_keep,
        best_metric=cfg.checkpoint.best_metric,
        best_mode=cfg.checkpoint.best_mode,
        background=cfg.checkpoint.background,
    )
    restored_from = store.restore()
    if restored_from is None and cfg.checkpoint.init_from:
        source = resolve_checkpoint(cfg.checkpoint.init_from)
        restore_weights(model, source)
        log.info("Initialized the model's weights from %s (weights only).", source)
    val_dataset = make_eval_dataset(
        val_rows["cache_path"].tolist(), val_rows["grade"].tolist(), 2 * cfg.train.batch_size
    )
    log.info(
        "Precision policy %s; model %s with %s parameters; optimizers %s.",
        policy,
        cfg.model.name,
        f"{model.count_params():,}",
        ", ".join(optimizers),
    )
    return Session(
        state,
        store,
        iterator,
        val_dataset,
        steps_per_epoch,
        restored_from,
        make_train_step(model, optimizers, groups),
        make_predict_step(model),
        uses_loss_scaling(policy),
    )


def train(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Trains (or resumes) the run in ``run_dir``; returns the last validation metrics,
    plus the held-out test metrics under ``test`` when ``train.evaluate_test`` is on.

    Raises:
        Preempted: after saving, when SIGTERM or SIGINT arrived.
        TrainingDiverged: the loss became non-finite (nothing non-finite was saved).
    """
    run_dir = Path(run_dir)
    cfg = with_absolute_paths(cfg)
    with RunLock(run_dir):
        session = open_session(cfg, run_dir)
        save_run_config(cfg, run_dir)  # only once the restore verified against this config
        _announce(session, cfg)
        try:
            with StopSignal() as stop:
                _train_epochs(session, cfg, run_dir, stop)
        finally:
            session.store.close()  # a checkpoint being written in the background completes
    result = session.state.metric_values()
    if cfg.train.evaluate_test:
        from retina.evaluation import evaluate_run

        result["test"] = evaluate_run(run_dir)
    return result


def _announce(session: Session, cfg: RunConfig) -> None:
    if session.restored_from:
        log.info("Restored from %s", session.restored_from)
    else:
        log.info("Initializing from scratch.")
    start, total = int(session.state.step.numpy()), cfg.train.epochs * session.steps_per_epoch
    if start >= total:
        log.info("Nothing to do: step %d already reached train.epochs=%d.", start, cfg.train.epochs)
    else:
        log.info(
            "Training steps %d..%d (%d steps per epoch).", start + 1, total, session.steps_per_epoch
        )


def _train_epochs(session: Session, cfg: RunConfig, run_dir: Path, stop: StopSignal) -> None:
    """Runs epochs until ``train.epochs``; the step counter, not a Python loop index, says
    where training is, so mid-epoch resumes and rollbacks need no special case."""
    state, spe = session.state, session.steps_per_epoch
    steps_log = StepLog(run_dir / STEPS_FILE, restored_step=int(state.step.numpy()))
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
    summary = _run_epoch(session, cfg, step + 1, (epoch + 1) * spe, steps_log, stop)
    grades, probabilities = predict_dataset(session.predict_step, session.val_dataset)
    metrics = clinical_metrics(grades, probabilities, cfg.train.referable_threshold)
    state.record_metrics(metrics)
    state.epoch.assign(epoch + 1)
    path = session.store.save(best=session.store.rank(metrics))
    _log_epoch(epoch, cfg.train.epochs, summary, metrics, path)
    _append_history(run_dir, epoch, step + 1, summary, metrics, state)
    if stop.received:
        raise Preempted(stop.received, (epoch + 1) * spe, str(path))


def _run_epoch(session, cfg: RunConfig, first: int, last: int, steps_log, stop) -> dict:
    """Steps ``first..last`` (a whole epoch, or its rest after a mid-epoch resume)."""
    state, every, batch = session.state, cfg.checkpoint.every_steps, cfg.train.batch_size
    if (first - 1) % session.steps_per_epoch == 0:
        state.reset_epoch_totals()
    started, skipped = time.perf_counter(), 0
    epoch_label = f"epoch {(first - 1) // session.steps_per_epoch + 1}/{cfg.train.epochs}"
    bar = tqdm(range(first, last + 1), desc=epoch_label, unit="step", mininterval=1.0, leave=False)
    for step in bar:
        images, labels = next(session.iterator)
        loss, accuracy = (float(t) for t in session.train_step(images, labels))
        if not math.isfinite(loss):
            if not session.loss_scaling:
                raise TrainingDiverged(
                    f"step {step}: the loss is {loss}; stopped without saving it. The last "
                    f"good checkpoint is {session.store.latest.prefixes()[:1] or 'none'}. "
                    "Lower optimizer.learning_rate, or set train.on_nonfinite=rollback."
                )
            skipped += 1  # the loss-scale optimizer skipped this step and halved its scale
        state.step.assign(step)
        state.add_step(loss if math.isfinite(loss) else 0.0, accuracy)
        steps_log.write(step, loss, accuracy)
        fault_point("step", step)
        rate = (step - first + 1) * batch / (time.perf_counter() - started)
        bar.set_postfix(
            loss=f"{state.epoch_means()['loss']:.4f}", img_s=f"{rate:.0f}", refresh=False
        )
        if step != last and (stop.received or (every and step % every == 0)):
            path = session.store.save()
            if stop.received:
                raise Preempted(stop.received, step, str(path))
    seconds = time.perf_counter() - started
    return {
        **state.epoch_means(),
        "images_per_s": (last - first + 1) * batch / seconds,
        "seconds": seconds,
        "skipped_steps": skipped,
    }


def _roll_back(session: Session, error: TrainingDiverged, steps_log: StepLog) -> None:
    """Restores the last good checkpoint and halves every learning rate."""
    path = session.store.restore()
    if path is None:
        raise error
    for optimizer in session.state.optimizers.values():
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        inner.learning_rate.assign(inner.learning_rate * 0.5)
    steps_log.truncate(int(session.state.step.numpy()))
    log.warning("%s Rolled back to %s with the learning rates halved.", error, path)


class StepLog:
    """``steps.csv``: one row per training step (step, loss, accuracy), kept consistent
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
            csv.writer(handle).writerows([["step", "loss", "accuracy"], *rows])
        # Line-buffered: each row reaches the file as it is written (a SIGKILL loses none),
        # without opening the file on every training step.
        self._handle = open(self.path, "a", buffering=1)

    def write(self, step: int, loss: float, accuracy: float) -> None:
        self._handle.write(f"{step},{loss!r},{accuracy!r}\n")

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

"""The custom training loop: ``train(cfg, run_dir)`` is everything ``python -m retina.train``
does, callable from tests and notebooks with a plain ``RunConfig``."""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf
from omegaconf import OmegaConf
from tqdm import tqdm

from retina.checkpoint import CheckpointStore, TrainingState
from retina.config import RunConfig
from retina.data.pipeline import make_eval_dataset, make_train_dataset
from retina.data.prepare import prepare_run_data
from retina.errors import ConfigError
from retina.metrics import clinical_metrics
from retina.models import build_model
from retina.training.optimizers import build_optimizer
from retina.training.precision import apply_precision
from retina.training.steps import make_predict_step, make_train_step, predict_dataset

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"
LATEST_DIR = "latest"


@dataclass
class Session:
    """What the loop works with once data, model and state are in place."""

    state: TrainingState
    store: CheckpointStore
    iterator: tf.data.Iterator
    val_dataset: tf.data.Dataset
    steps_per_epoch: int
    restored_from: str | None


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


def open_session(cfg: RunConfig, run_dir: Path) -> Session:
    """Builds data, model, optimizer and iterator, then restores the latest checkpoint.

    Follows the restore order documented in ``retina.checkpoint``.
    """
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
    optimizer = build_optimizer(cfg.optimizer, policy)
    optimizer.build(model.trainable_variables)
    iterator = iter(
        make_train_dataset(
            train_rows["cache_path"].tolist(),
            train_rows["grade"].tolist(),
            cfg.train.batch_size,
            seed=cfg.seed,
            augment=cfg.train.augment,
        )
    )
    state = TrainingState(model, optimizer, iterator)
    store = CheckpointStore(run_dir / LATEST_DIR, state, cfg.checkpoint.max_to_keep)
    restored_from = store.restore_latest()
    val_dataset = make_eval_dataset(
        val_rows["cache_path"].tolist(),
        val_rows["grade"].tolist(),
        batch_size=2 * cfg.train.batch_size,
    )
    log.info(
        "Precision policy %s; model %s with %s parameters.",
        policy,
        cfg.model.name,
        f"{model.count_params():,}",
    )
    return Session(state, store, iterator, val_dataset, steps_per_epoch, restored_from)


def train(cfg: RunConfig, run_dir: str | Path) -> dict:
    """Trains (or resumes) the run in ``run_dir``; returns the last validation metrics,
    plus the held-out test metrics under ``test`` when ``train.evaluate_test`` is on."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = with_absolute_paths(cfg)
    save_run_config(cfg, run_dir)
    session = open_session(cfg, run_dir)
    state, spe = session.state, session.steps_per_epoch
    if session.restored_from:
        log.info("Restored from %s", session.restored_from)
    else:
        log.info("Initializing from scratch.")
    total_steps = cfg.train.epochs * spe
    start = int(state.step.numpy())
    if start >= total_steps:
        log.info("Nothing to do: step %d already reached train.epochs=%d.", start, cfg.train.epochs)
    else:
        log.info("Training steps %d..%d (%d steps per epoch).", start + 1, total_steps, spe)
    train_step = make_train_step(state.model, state.optimizer)
    predict_step = make_predict_step(state.model)
    for epoch in range(start // spe, cfg.train.epochs):
        first, last = int(state.step.numpy()) + 1, (epoch + 1) * spe
        summary = _run_epoch(session, cfg, train_step, first, last, epoch)
        grades, probabilities = predict_dataset(predict_step, session.val_dataset)
        metrics = clinical_metrics(grades, probabilities, cfg.train.referable_threshold)
        state.record_metrics(metrics)
        state.epoch.assign(epoch + 1)
        path = session.store.save()
        _log_epoch(epoch, cfg.train.epochs, summary, metrics, path)
        _append_history(
            run_dir,
            {
                "epoch": epoch + 1,
                "first_step": first,
                "last_step": last,
                **summary,
                **{f"val_{k}": v for k, v in metrics.items() if k in state.metrics},
            },
        )
    result = state.metric_values()
    if cfg.train.evaluate_test:
        from retina.evaluation import evaluate_run

        result["test"] = evaluate_run(run_dir)
    return result


def _run_epoch(
    session: Session, cfg: RunConfig, train_step, first: int, last: int, epoch: int
) -> dict:
    """Steps ``first..last`` (a whole epoch, or its rest after a mid-epoch resume)."""
    state, every = session.state, cfg.checkpoint.every_steps
    loss_sum = accuracy_sum = 0.0
    started = time.perf_counter()
    bar = tqdm(
        range(first, last + 1),
        desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
        unit="step",
        mininterval=1.0,
        leave=False,
    )
    for step in bar:
        images, labels = next(session.iterator)
        loss, accuracy = train_step(images, labels)
        state.step.assign(step)
        loss_sum += float(loss)
        accuracy_sum += float(accuracy)
        done = step - first + 1
        rate = done * cfg.train.batch_size / (time.perf_counter() - started)
        bar.set_postfix(loss=f"{loss_sum / done:.4f}", img_s=f"{rate:.0f}", refresh=False)
        if every and step % every == 0 and step != last:
            session.store.save()
    steps = last - first + 1
    seconds = time.perf_counter() - started
    return {
        "loss": loss_sum / steps,
        "accuracy": accuracy_sum / steps,
        "images_per_s": steps * cfg.train.batch_size / seconds,
        "seconds": seconds,
    }


def _log_epoch(epoch: int, epochs: int, summary: dict, metrics: dict, path: str) -> None:
    log.info(
        "epoch %d/%d  loss %.4f  acc %.3f  %.0f img/s | val AUC %.3f  sens %.3f  "
        "spec %.3f  kappa %.3f | saved %s",
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


def _append_history(run_dir: Path, row: dict) -> None:
    path = run_dir / HISTORY_FILE
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(
            {
                k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                for k, v in row.items()
            }
        )


def read_history(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / HISTORY_FILE)

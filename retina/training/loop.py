"""The custom training loop: ``train(cfg, run_dir)`` is everything ``python -m retina.train``
does, callable from tests and notebooks with a plain ``RunConfig``."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from retina.checkpoint.files import fault_point, has_checkpoints
from retina.checkpoint.lock import RunLock
from retina.checkpoint.read import find_checkpoint
from retina.checkpoint.state import weights_fingerprint
from retina.config import OnNonfinite, RunConfig
from retina.config.folder_names import check_run_dir
from retina.console import redirect_file_log
from retina.errors import Preempted, TrainingDiverged, WorkerLost
from retina.evaluation.held_out import evaluate_run
from retina.metrics.rates import is_referable, referable_probability
from retina.metrics.summary import clinical_metrics
from retina.metrics.thresholds import choose_operating_points
from retina.metrics.undefined import gathered, log_undefined
from retina.run_dir import (
    METRICS_FILE,
    STEPS_FILE,
    StepLog,
    append_history,
    evaluation_dir,
    save_run_config,
    worker_log_file,
    write_status,
)
from retina.training.cadence import is_due, steps_until_due
from retina.training.choices import check_run_choices
from retina.training.distribute import build_placement
from retina.training.preemption import ClusterStopSignal, StopSignal
from retina.training.session import Session, open_session, with_absolute_paths
from retina.training.validation import fit_grading

log = logging.getLogger(__name__)
MAX_ROLLBACKS = 3
# What a collective op raises when a peer of a multi-worker run is gone.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
)


def train(cfg: RunConfig, run_dir: str | Path, epoch_end=None) -> dict:
    """Trains (or resumes) the run in ``run_dir``; returns the last validation metrics, the
    best value of ``checkpoint.best_metric`` under ``best``, and the held-out test metrics
    under ``test`` when ``train.evaluate_test`` is on. ``epoch_end(epoch, metrics)``, if
    given, is called on the chief after each epoch is validated and saved (it may raise to
    stop, as Optuna's pruning does).

    Raises:
        ConfigError: a fixed-choice key has an unknown value (before any data is read).
        Preempted: after saving, when SIGTERM or SIGINT arrived.
        TrainingDiverged: the loss became non-finite (nothing non-finite was saved).
    """
    # --- Set-up: choices checked, paths made absolute, the strategy created first (the
    # multi-worker strategy must precede any other TensorFlow work in the process).
    run_dir, started = Path(run_dir), time.perf_counter()
    check_run_dir(run_dir)
    check_run_choices(cfg, resuming=has_checkpoints(run_dir))
    cfg = with_absolute_paths(cfg)
    placement = build_placement(cfg.trainer)
    if not placement.is_chief:
        redirect_file_log(run_dir / worker_log_file(placement.worker_index))
    with RunLock(run_dir) if placement.is_chief else contextlib.nullcontext():
        # --- Data, model and state, restore: see retina.training.session.
        session = open_session(cfg, run_dir, placement)
        if session.chief:
            save_run_config(session.cfg, run_dir)  # once the restore verified against it
        already_done = announce_start(session)

        # --- Epochs: the step counter, not a loop index, says where training is, so
        # mid-epoch resumes and rollbacks need no special case.
        steps_path = run_dir / STEPS_FILE if session.chief else None  # the chief's log only
        rollbacks = 0
        try:
            with (
                stop_signal(session) as stop,
                StepLog(steps_path, session.state.current_step) as steps_log,
            ):
                while (step := session.state.current_step) < session.total_steps:
                    try:
                        metrics = train_epoch(session, step, steps_log, stop)
                        if epoch_end and session.chief:
                            epoch_end(session.state.epoch.numpy().item(), metrics)
                    except TrainingDiverged as error:
                        gives_up = cfg.train.on_nonfinite != OnNonfinite.rollback
                        if gives_up or rollbacks == MAX_ROLLBACKS:
                            raise
                        rollbacks += 1
                        roll_back(session, error, steps_log)
        finally:
            session.store.close()  # a checkpoint being written in the background completes

    # --- End: fingerprint, best value, held-out test, status.
    log.info(
        "Model weights sha256 %s (worker %d).",
        weights_fingerprint(session.state.model),
        placement.worker_index,
    )
    result = session.state.metric_values()
    # The ledger is sorted best first: the value the best/ checkpoint was ranked by.
    best_value = float(session.state.best_values.numpy()[0])
    result["best"] = {"metric": cfg.checkpoint.best_metric, "value": best_value}
    if not session.chief:
        return result
    if cfg.train.evaluate_test:
        result["test"] = evaluate_test(run_dir, reuse=already_done)
    write_status(
        run_dir,
        status="finished",
        resumed=session.restored_from is not None and not already_done,
        seconds=round(time.perf_counter() - started, 1),
        ended=time.time(),
    )
    return result


def announce_start(session: Session) -> bool:
    """Logs where training starts; True when the run has nothing left to train."""
    if session.restored_from:
        log.info("Restored from %s", session.restored_from)
    else:
        log.info("Initializing from scratch.")
    start, total = session.state.current_step, session.total_steps
    if start >= total:
        epochs = session.cfg.train.epochs
        log.info("Nothing to do: step %d already reached train.epochs=%d.", start, epochs)
        return True
    log.info(
        "Training steps %d..%d (%d steps per epoch).", start + 1, total, session.steps_per_epoch
    )
    return False


def stop_signal(session: Session):
    """What turns SIGTERM into a save and a clean exit: tf.distribute's preemption handler
    across workers, our own signal flag in a single process."""
    if session.placement.multi_worker:
        return ClusterStopSignal(
            session.placement.strategy, session.store.save, lambda: session.state.current_step
        )
    return StopSignal()


def train_epoch(session: Session, step: int, steps_log: StepLog, stop) -> dict:
    """From ``step + 1`` to the end of its epoch; then validate, choose the operating
    points, rank, save, and record the epoch. Returns the validation metrics."""
    state, spe, cfg = session.state, session.steps_per_epoch, session.cfg
    epoch = step // spe
    summary = run_steps(session, step + 1, (epoch + 1) * spe, steps_log, stop)
    grades, outputs = session.validate()
    grading = fit_grading(cfg.model.head, cfg.grading.thresholds, grades, outputs)
    probabilities = grading.probabilities(outputs).numpy()
    positive, scores = is_referable(grades), referable_probability(probabilities)
    with gathered() as undefined_metrics:
        threshold, predicted = (
            cfg.operating_points.referable_threshold,
            grading.predicted_grades(probabilities),
        )
        metrics = clinical_metrics(grades, probabilities, threshold, predicted=predicted)
        points = choose_operating_points(positive, scores, **asdict(cfg.operating_points))
    log_undefined(undefined_metrics, log, f"Validation after epoch {epoch + 1}")
    state.record_metrics(metrics)
    state.record_operating_points(points)
    state.record_grading(grading)
    state.record_quality(session.fit_quality())  # retina.quality: the gate of these weights
    state.epoch.assign(epoch + 1)
    path = session.store.save(best=session.store.rank(metrics))
    log_epoch(epoch, cfg.train.epochs, summary, metrics, path)
    if session.chief:
        append_history(session.run_dir, history_row(epoch, step + 1, summary, metrics, state))
    if session.tensorboard:
        session.tensorboard.epoch_end(state.current_step, summary, metrics)
    if stop.received:
        raise Preempted(stop.received, (epoch + 1) * spe, str(path))
    return metrics


def run_steps(session: Session, first: int, last: int, steps_log: StepLog, stop) -> dict:
    """Steps ``first..last`` (a whole epoch, or its rest after a mid-epoch resume), in
    compiled calls of ``train.steps_per_execution``; saves every ``checkpoint.every_steps``
    and on a stop signal."""
    state, cfg, spe = session.state, session.cfg, session.steps_per_epoch
    every, batch = cfg.checkpoint.every_steps, cfg.train.batch_size
    if is_due(first - 1, spe):
        state.reset_epoch_totals()
    run = session.train_function((first - 1) // spe)
    started, skipped, step = time.perf_counter(), 0, first - 1
    epoch_label = f"epoch {(first - 1) // spe + 1}/{cfg.train.epochs}"
    bar = tqdm(total=last - first + 1, desc=epoch_label, unit="step", mininterval=1.0, leave=False)
    while step < last:
        count = min(max(cfg.train.steps_per_execution, 1), last - step)
        count = min(count, steps_until_due(step, every)) if every else count
        losses, accuracies, applied = run_chunk(session, run, count)
        for loss, accuracy, ok in zip(losses.tolist(), accuracies.tolist(), applied, strict=True):
            step += 1
            if not math.isfinite(loss) and not session.loss_scaling:
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
        if step != last and (stop.received or is_due(step, every)):
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


def run_chunk(session: Session, run, count: int) -> tuple:
    """One compiled call; under multi-worker, a lost peer becomes ``WorkerLost``."""
    try:
        return tuple(t.numpy() for t in run(session.iterator, count))
    except PEER_ERRORS as error:
        if not session.placement.multi_worker:
            raise
        latest = session.store.latest.prefixes()
        where = str(latest[0]) if latest else "the start"
        raise WorkerLost(peer_failure(error.message), where) from None


def peer_failure(message: str) -> str:
    """The useful line of a collective op's error: which task stopped, if it says."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line, following in zip(lines, lines[1:], strict=False):
        if "stopped sending heartbeats" in line:
            return f"no heartbeat from {following}"
    return lines[-1][:200] if lines else "no detail"


def roll_back(session: Session, error: TrainingDiverged, steps_log: StepLog) -> None:
    """Restores the last good checkpoint and halves every learning rate."""
    path = session.store.restore()
    if path is None:
        raise error
    session.state.lr_scale.assign(session.state.lr_scale * 0.5)
    steps_log.truncate(session.state.current_step)
    log.warning("%s Rolled back to %s with the learning rates halved.", error, path)


def log_epoch(epoch: int, epochs: int, summary: dict, metrics: dict, path) -> None:
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


def history_row(epoch: int, first: int, summary: dict, metrics: dict, state) -> dict:
    """One row of ``history.csv``: steps, the epoch's training summary, validation metrics
    and the operating points chosen on them."""
    row = {"epoch": epoch + 1, "first_step": first, "last_step": state.current_step}
    row.update(summary)
    row.update({f"val_{k}": metrics[k] for k in state.metrics})
    row.update({f"threshold_{k}": float(v.numpy()) for k, v in state.operating_points.items()})
    return row


def evaluate_test(run_dir: Path, reuse: bool) -> dict:
    """The held-out evaluation of the last checkpoint; a run that had nothing left to train
    (a finished job of a re-launched sweep) keeps the one it already wrote."""
    written = evaluation_dir(run_dir, find_checkpoint(run_dir).name, "test") / METRICS_FILE
    if reuse and written.is_file():
        log.info("Already evaluated: %s", written)
        return json.loads(written.read_text())
    return evaluate_run(run_dir)

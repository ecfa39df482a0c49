"""The run's two checkpoint folders, ``latest/`` (every save) and ``best/`` (the ledger's
top k), saved and restored in the orders written down in ``retina.checkpoint``."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tensorflow as tf

from retina.checkpoint.files import damage, step_of
from retina.checkpoint.folder import TF_STATE_FILE, CheckpointFolder
from retina.checkpoint.ledger import rank
from retina.checkpoint.read import verified_read
from retina.checkpoint.snapshot import Snapshotter
from retina.checkpoint.state import TrainingState
from retina.config import ValidationMetric, require_choice
from retina.errors import CheckpointError
from retina.run_dir import BEST_DIR, LATEST_DIR, QUARANTINE_DIR

log = logging.getLogger(__name__)


def start_snapshotter(checkpoint: tf.train.Checkpoint) -> Snapshotter | None:
    """The background writer's snapshot taker; None, with one warning, when this TensorFlow
    lacks the internals it uses (then every save runs on the training thread)."""
    try:
        return Snapshotter(checkpoint)
    except (ImportError, AttributeError) as error:
        log.warning(
            "Checkpoints are written on the training thread: TensorFlow %s lacks an internal "
            "the background writer uses (%s: %s). Training is unaffected; saves just block.",
            tf.__version__,
            type(error).__name__,
            error,
        )
        return None


class CheckpointStore:
    """``latest/`` and ``best/`` of one run directory.

    Args:
        run_dir: the run directory.
        state: the training state written and read.
        describe: JSON-able facts stored in every sidecar (config hash, model config...).
        max_to_keep: checkpoints kept in ``latest/``.
        best_metric, best_mode: what ranks ``best/``.
        background: write files on a worker thread (one write in flight at a time).
        chief: whether this process writes the run directory (multi-worker: worker 0 only).
    """

    def __init__(
        self,
        run_dir: str | Path,
        state: TrainingState,
        describe: dict,
        *,
        max_to_keep: int = 3,
        best_metric: str = "referable_auc",
        best_mode: str = "max",
        background: bool = False,
        chief: bool = True,
    ):
        self.best_metric = require_choice("checkpoint.best_metric", best_metric, ValidationMetric)
        self.best_mode = best_mode
        self.run_dir = Path(run_dir)
        self.state = state
        self.latest = CheckpointFolder(self.run_dir / LATEST_DIR, state, describe)
        self.best = CheckpointFolder(self.run_dir / BEST_DIR, state, describe)
        self.max_to_keep = max_to_keep
        self.chief = chief
        background = background and chief
        self._snapshotter = start_snapshotter(state.checkpoint) if background else None
        self._writer = ThreadPoolExecutor(1, "checkpoint-writer") if self._snapshotter else None
        self._pending = None

    def rank(self, metrics: dict) -> bool:
        """Offers the current state to the best-k ledger by the monitored metric.

        Call before ``save``, so the checkpoint in ``latest/`` holds the ledger with this
        offer: if a crash then interrupts the ``best/`` write, ``restore`` redoes it.
        """
        values, steps, admitted, _ = rank(
            self.state.best_values.numpy(),
            self.state.best_steps.numpy(),
            float(metrics[self.best_metric]),
            self.state.current_step,
            self.best_mode,
        )
        self.state.best_values.assign(values)
        self.state.best_steps.assign(steps)
        return admitted

    def save(self, best: bool = False) -> Path:
        """Saves to ``latest/`` (keeping ``max_to_keep``), then to ``best/`` if it ranked.

        With ``background`` on, only the snapshot is taken here; the files are written by
        a worker thread while training goes on. At most one write is in flight: the next
        save (or ``wait``) waits for it and re-raises its error.
        """
        self.wait()
        if not self.chief:
            return self._write_and_discard()
        jobs = [self.latest.prepare("latest")] + ([self.best.prepare("best")] if best else [])
        ledger = set(self.state.ledger_steps())
        if self._snapshotter is None:
            self._commit(jobs, None, ledger)
        else:
            write_data = functools.partial(self._snapshotter.write, self._snapshotter.snapshot())
            self._pending = self._writer.submit(self._commit, jobs, write_data, ledger)
        return jobs[0]["prefix"]

    def _write_and_discard(self) -> Path:
        """A non-chief worker's save (multi-worker): it writes like the chief, because a
        save may need every worker, but into a temporary folder that it then deletes; the
        chief's copy in the run directory is the checkpoint. Returns the chief's prefix."""
        step = self.state.current_step
        folder = tempfile.mkdtemp(prefix="retina-worker-checkpoint-")
        try:
            self.state.checkpoint.write(os.path.join(folder, f"ckpt-{step}"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return self.latest.directory / f"ckpt-{step}"

    def _commit(self, jobs: list[dict], write_data, ledger: set[int]) -> None:
        for job in jobs:
            (self.latest if job["kind"] == "latest" else self.best).commit(job, write_data)
        self.latest.keep_only({step_of(p) for p in self.latest.prefixes()[: self.max_to_keep]})
        self.latest.update_state_file()
        self.best.keep_only(ledger)
        self.best.update_state_file()

    def wait(self) -> None:
        """Blocks until the background write (if any) is complete; re-raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown()

    # ------------------------------------------------------------------------- restore

    def restore(self) -> Path | None:
        """Restores the newest intact ``latest/`` checkpoint; None when there is none.

        Restore order steps 4-5 (steps 1-3 built the state this reads into).

        Raises:
            CheckpointError: checkpoints exist but none is intact, or the intact one does not
                match the model built from the current config.
        """
        self.wait()
        if not self.chief:
            return self._restore_read_only()
        self._check_state_file()
        for folder in (self.latest, self.best):
            for name in folder.clean_orphans():
                log.warning(
                    "Removed %s/%s, left by an interrupted save.", folder.directory.name, name
                )
        problems = []
        for prefix in self.latest.prefixes():
            why = damage(prefix)
            if why:
                log.warning(
                    "Skipping checkpoint %s: %s; moved to %s/.", prefix, why, QUARANTINE_DIR
                )
                problems.append(f"{prefix.name}: {why}")
                self.latest.quarantine(prefix, self.run_dir)
                continue
            self._read_whole_state(prefix)
            self.latest.update_state_file()
            self._sync_best()
            return prefix
        if problems:
            raise CheckpointError(
                f"no intact checkpoint in {self.latest.directory} ({'; '.join(problems)}). "
                f"The damaged files are in {self.run_dir / QUARANTINE_DIR}. Not restarting at "
                "step 0 on top of them: use a new run directory to start over."
            )
        return None

    def _restore_read_only(self) -> Path | None:
        """A non-chief worker's restore: the newest intact checkpoint of the run directory,
        read and verified like the chief's, without moving or rewriting anything there
        (the chief quarantines and tidies)."""
        for prefix in self.latest.prefixes():
            if damage(prefix) is None:
                self._read_whole_state(prefix)
                return prefix
        return None

    def _read_whole_state(self, prefix: Path) -> None:
        """Restore order step 5: read every value, then verify it all matched."""
        verified_read(
            lambda: self.state.checkpoint.read(str(prefix)),
            prefix,
            complete=True,
            describe=self.latest.describe,
        )

    def _sync_best(self) -> None:
        """After a restore, makes ``best/`` hold exactly the restored ledger's checkpoints."""
        ledger = set(self.state.ledger_steps())
        step = self.state.current_step
        if step in ledger and step not in {step_of(p) for p in self.best.prefixes()}:
            self.best.save("best")  # the state is the one ranked: finish the interrupted write
        self.best.keep_only(ledger)
        self.best.update_state_file()

    def _check_state_file(self) -> None:
        """TF's state file is rewritten from the sidecars; say so when it was damaged."""
        path = self.latest.directory / TF_STATE_FILE
        if not path.exists():
            return
        try:
            readable = tf.train.get_checkpoint_state(str(self.latest.directory)) is not None
        except Exception:  # TF raises ValueError or a protobuf ParseError, by content
            readable = False
        if not readable:
            log.warning("%s is empty or garbled; rebuilding it from the checkpoint sidecars.", path)

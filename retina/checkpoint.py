"""The checkpoint layer: every checkpoint read and write of the project goes through here.

A checkpoint holds the training *state*, not just weights: step, epoch, model, every
optimizer (moments and loss scale included), the training-data iterator, the Keras RNG
states, the running training metrics of the epoch, the latest validation metrics and the
best-checkpoint ledger. Resuming from it continues the same run, bit for bit.

Layout of a run directory::

    latest/ckpt-<step>.{index,data-*}   the newest ``checkpoint.max_to_keep`` states
    latest/ckpt-<step>.meta.json        sidecar: step, metrics, hashes, versions; written
                                        after the data, so it marks a complete checkpoint
    latest/checkpoint                   TF's state file, for TF tools; never trusted here
    best/...                            the same for the top ``checkpoint.keep_best`` states
    quarantine/                         damaged checkpoints moved out of the way

Save order (a kill at any point leaves the previous checkpoints usable):
  1. Refuse non-finite weights: they never reach disk.
  2. ``tf.train.Checkpoint.write``: TF writes temp files and renames them.
  3. Hash the files and write the sidecar (temp file, fsync, rename): now it exists.
  4. Update TF's state file, then delete checkpoints beyond the limit (sidecar first).
With ``checkpoint.background`` on, step 1 and a snapshot of every value (see
``retina.checkpoint_snapshot``) run on the training thread and steps 2-4 on a writer
thread, one write in flight at a time.

Multi-worker training (``trainer.strategy=multi_worker``): only the chief (worker 0)
writes the run directory. Every other worker writes the same state into a temporary
folder and deletes it (a save may need all workers), and restores read-only from the
chief's checkpoints: the newest intact one, without quarantining or rewriting anything.

Restore order (each step needs the one before it):
  1. Set the dtype policy, then build the model from the run's config.
  2. Build every optimizer on its variables. Keras 3 creates moment variables lazily;
     unbuilt, their saved values would wait in deferred restoration, where nothing can
     check them, and ``assert_consumed()`` would fail on a good checkpoint.
  3. Create the training-data iterator; its position is part of the state.
  4. Pick the newest checkpoint whose sidecar exists and whose files match its SHA-256;
     damaged ones are reported by name and quarantined.
  5. Read it, then verify: every saved value consumed, every live object matched. A
     mismatch names the first differing variable and the config values that differ.
  6. Train from ``step + 1``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from retina.checkpoint_snapshot import Snapshotter
from retina.errors import CheckpointError, TrainingDiverged
from retina.training.ema import WeightAverage, averaged_variables

log = logging.getLogger(__name__)

VALIDATION_METRICS = ("referable_auc", "sensitivity", "specificity", "quadratic_weighted_kappa")
OPERATING_POINTS = ("default", "high_sensitivity", "high_specificity")
LATEST_DIR, BEST_DIR, QUARANTINE_DIR = "latest", "best", "quarantine"
SIDECAR_SUFFIX = ".meta.json"
_NAME = re.compile(r"^ckpt-(\d+)$")
FAULT_ENV = "RETINA_FAULT"  # tests only: "<point>:<step>" kills the process at that point


def seed_generator_states(model: keras.Model) -> list[tf.Variable]:
    """The state variables of the model's Keras SeedGenerators (dropout and the like).

    ``tf.train.Checkpoint(model=...)`` does not save them, and without them a resumed run
    draws different dropout masks than an uninterrupted one.
    """
    states = []
    for layer in model._flatten_layers(include_self=False):
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator):
                states.append(value.state)
    return states


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 over every model weight (BatchNorm statistics included; the dropout seed
    states, which are not weights, left out): equal on two workers, or after a restore,
    exactly when every weight is bit-identical."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


class TrainingState:
    """Everything that must survive a restart, as one ``tf.train.Checkpoint``."""

    def __init__(
        self,
        model: keras.Model,
        optimizers: dict[str, keras.optimizers.Optimizer],
        iterator: tf.data.Iterator | None = None,
        keep_best: int = 3,
        lr_scale: tf.Variable | None = None,
        ema: WeightAverage | None = None,
    ):
        self.model = model
        self.optimizers = optimizers
        self.iterator = iterator
        self.ema = ema
        self._finite_check = None
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Steps the loss-scale optimizer skipped (non-finite gradients), over the whole run.
        self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped")
        self.lr_scale = lr_scale if lr_scale is not None else tf.Variable(1.0, trainable=False)
        # Sums over the current epoch, so a mid-epoch resume reports the same epoch mean.
        self.epoch_totals = {
            name: tf.Variable(0.0, dtype=tf.float64, trainable=False, name=f"epoch_{name}")
            for name in ("loss", "accuracy", "steps")
        }
        self.metrics = {
            name: tf.Variable(float("nan"), trainable=False, name=f"val_{name}")
            for name in VALIDATION_METRICS
        }
        # Referral thresholds chosen on the validation split at this step; evaluation applies
        # them unchanged, so they are never tuned on the test set.
        self.operating_points = {
            name: tf.Variable(float("nan"), trainable=False, name=f"threshold_{name}")
            for name in OPERATING_POINTS
        }
        # The best-checkpoint ledger: empty slots hold step -1.
        self.best_values = tf.Variable([float("nan")] * keep_best, trainable=False)
        self.best_steps = tf.Variable([-1] * keep_best, dtype=tf.int64, trainable=False)
        parts = dict(
            step=self.step,
            epoch=self.epoch,
            model=model,
            optimizers=optimizers,
            rng=seed_generator_states(model),
            epoch_totals=self.epoch_totals,
            metrics=self.metrics,
            best_values=self.best_values,
            best_steps=self.best_steps,
            skipped_steps=self.skipped_steps,
            lr_scale=self.lr_scale,
            operating_points=self.operating_points,
        )
        if iterator is not None:
            parts["iterator"] = iterator
        if ema is not None:
            parts["ema"] = ema.averages
        self.checkpoint = tf.train.Checkpoint(**parts)

    def record_metrics(self, metrics: dict) -> None:
        for name, variable in self.metrics.items():
            variable.assign(float(metrics[name]))

    def record_operating_points(self, thresholds: dict[str, float]) -> None:
        for name, variable in self.operating_points.items():
            variable.assign(float(thresholds[name]))

    def metric_values(self) -> dict[str, float]:
        return {name: float(variable.numpy()) for name, variable in self.metrics.items()}

    def epoch_means(self) -> dict[str, float]:
        steps = max(float(self.epoch_totals["steps"].numpy()), 1.0)
        return {k: float(self.epoch_totals[k].numpy()) / steps for k in ("loss", "accuracy")}

    def reset_epoch_totals(self) -> None:
        for variable in self.epoch_totals.values():
            variable.assign(0.0)

    def weights_are_finite(self) -> bool:
        """Model weights and optimizer moments hold no NaN or Inf (one compiled check)."""
        if self._finite_check is None:
            variables = list(self.model.variables)
            for optimizer in self.optimizers.values():
                variables += optimizer.variables
            floats = [v for v in variables if keras.backend.is_float_dtype(v.dtype)]
            self._finite_check = tf.function(
                lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in floats])
            )
        return bool(self._finite_check())


# ----------------------------------------------------------------------------- ledger


def rank(values: np.ndarray, steps: np.ndarray, value: float, step: int, mode: str):
    """Offers (value, step) to the best-k ledger.

    Returns:
        (values, steps, admitted, evicted_step): the new ledger sorted best first, whether
        the offer got a slot, and the step that lost its slot (-1 if none). A non-finite
        value never ranks.
    """
    if mode not in ("max", "min"):
        raise CheckpointError(f"checkpoint.best_mode={mode!r}; use max or min.")
    if not math.isfinite(value):
        return values, steps, False, -1
    entries = [(v, s) for v, s in zip(values, steps, strict=True) if s >= 0] + [(value, step)]
    entries.sort(key=lambda e: (-e[0] if mode == "max" else e[0], -e[1]))
    kept, dropped = entries[: len(values)], entries[len(values) :]
    admitted = any(s == step for _, s in kept)
    padding = [(float("nan"), -1)] * (len(values) - len(kept))
    new_values = np.array([v for v, _ in kept + padding], np.float32)
    new_steps = np.array([s for _, s in kept + padding], np.int64)
    return new_values, new_steps, admitted, dropped[0][1] if dropped else -1


# ----------------------------------------------------------------------------- files


def _files_of(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(f"{prefix.name}.index")) + sorted(
        prefix.parent.glob(f"{prefix.name}.data-*")
    )


def _sha256(path: Path, sync: bool = False) -> str:
    """The file's SHA-256; with ``sync``, also forces it to disk (TF does not fsync), so a
    sidecar never vouches for data that a power cut could still lose."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
        if sync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    with open(partial, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself is durable only once the folder is synced
    finally:
        os.close(directory)


def _step_of(prefix: Path) -> int:
    return int(_NAME.match(prefix.name).group(1))


def _sidecar(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + SIDECAR_SUFFIX)


def read_sidecar(prefix: str | Path) -> dict:
    return json.loads(_sidecar(Path(prefix)).read_text())


def damage(prefix: Path) -> str | None:
    """Why the checkpoint at ``prefix`` cannot be trusted, or None if it is intact."""
    try:
        meta = read_sidecar(prefix)
    except FileNotFoundError:
        return "no sidecar (the save did not finish)"
    except (json.JSONDecodeError, OSError) as error:
        return f"unreadable sidecar ({type(error).__name__})"
    for name, expected in meta.get("files", {}).items():
        path = prefix.parent / name
        if not path.exists():
            return f"{name} is missing"
        if _sha256(path) != expected:
            return f"{name} does not match its SHA-256 (truncated or corrupted)"
    return None if meta.get("files") else "sidecar lists no files"


def library_versions() -> dict[str, str]:
    from retina import __version__

    return {
        "retina": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def fault_point(point: str, step: int) -> None:
    """Crash-test hook: ``RETINA_FAULT=<point>:<step>`` SIGKILLs the process right here."""
    if os.environ.get(FAULT_ENV) == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- folders


class CheckpointFolder:
    """One folder of verified checkpoints (``latest/`` or ``best/``).

    Args:
        directory: the folder.
        state: the training state written and read.
        describe: JSON-able facts stored in every sidecar (config hash, model config...).
    """

    def __init__(self, directory: str | Path, state: TrainingState, describe: dict):
        self.directory = Path(directory)
        self.state = state
        self.describe = describe

    def prefixes(self) -> list[Path]:
        """Complete-looking checkpoints (those with a sidecar), newest step first."""
        found = []
        for sidecar in self.directory.glob(f"ckpt-*{SIDECAR_SUFFIX}"):
            match = _NAME.match(sidecar.name[: -len(SIDECAR_SUFFIX)])
            if match:
                found.append((int(match.group(1)), sidecar.with_name(match.group(0))))
        return [prefix for _, prefix in sorted(found, reverse=True)]

    def prepare(self, kind: str) -> dict:
        """Save order step 1, on the training thread: refuse non-finite weights, fix the
        prefix and the sidecar facts of the state as it is now."""
        step = int(self.state.step.numpy())
        if not self.state.weights_are_finite():
            raise TrainingDiverged(
                f"step {step}: the weights hold NaN or Inf; not saving them over the good "
                f"checkpoints in {self.directory}. Lower optimizer.learning_rate, or set "
                "train.on_nonfinite=rollback."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        prefix = self.directory / f"ckpt-{step}"
        _sidecar(prefix).unlink(missing_ok=True)  # a re-save of a step is incomplete until 3.
        meta = {
            "name": prefix.name,
            "kind": kind,
            "step": step,
            "epoch": int(self.state.epoch.numpy()),
            "metrics": self.state.metric_values(),
            "train": self.state.epoch_means(),
            "best_ledger": [int(s) for s in self.state.best_steps.numpy() if s >= 0],
            "versions": library_versions(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.describe,
        }
        return {"prefix": prefix, "kind": kind, "step": step, "meta": meta}

    def commit(self, job: dict, snapshot=None) -> Path:
        """Save order steps 2-3: the data (from ``snapshot`` when given, else the live
        state), then hashes, fsync and the sidecar."""
        prefix, step, kind = job["prefix"], job["step"], job["kind"]
        try:
            if snapshot is None:
                self.state.checkpoint.write(str(prefix))
            else:
                Snapshotter.write(snapshot, str(prefix))
            fault_point(f"{kind}_after_data", step)
            files = {p.name: _sha256(p, sync=True) for p in _files_of(prefix)}
            meta = {**job["meta"], "files": files}
            _write_atomically(_sidecar(prefix), json.dumps(meta, indent=2, default=float) + "\n")
        except (OSError, tf.errors.OpError) as error:
            self._remove(prefix)
            raise CheckpointError(
                f"could not write {prefix}: {error}. Earlier checkpoints in {self.directory} "
                "are intact; free disk space (or fix permissions) and re-run to resume."
            ) from None
        fault_point(f"{kind}_after_sidecar", step)
        return prefix

    def save(self, kind: str) -> Path:
        """A synchronous save of the live state."""
        return self.commit(self.prepare(kind))

    def update_state_file(self) -> None:
        """Rewrites TF's ``checkpoint`` file (for ``tf.train.latest_checkpoint`` and other
        TF tools) from the sidecars, oldest first as TF lists them."""
        prefixes = self.prefixes()
        if prefixes:
            lines = [f'model_checkpoint_path: "{prefixes[0].name}"']
            lines += [f'all_model_checkpoint_paths: "{p.name}"' for p in reversed(prefixes)]
            _write_atomically(self.directory / "checkpoint", "\n".join(lines) + "\n")

    def keep_only(self, steps: set[int]) -> None:
        for prefix in self.prefixes():
            if _step_of(prefix) not in steps:
                self._remove(prefix)

    @staticmethod
    def _remove(prefix: Path) -> None:
        _sidecar(prefix).unlink(missing_ok=True)  # first: a half-removed one is incomplete
        for path in _files_of(prefix):
            path.unlink(missing_ok=True)

    def clean_orphans(self) -> list[str]:
        """Removes temp files of killed saves and data files without a sidecar."""
        removed = []
        if not self.directory.exists():
            return removed
        complete = {p.name for p in self.prefixes()}
        for path in self.directory.iterdir():
            base = path.name.split(".")[0]
            temp = "_temp" in path.name or path.name.endswith(".tmp")
            orphan = _NAME.match(base) and base not in complete
            if temp or orphan:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path.name)
        return removed

    def quarantine(self, prefix: Path, run_dir: Path) -> None:
        target = run_dir / QUARANTINE_DIR / f"{self.directory.name}-{prefix.name}"
        target.mkdir(parents=True, exist_ok=True)
        for path in [*_files_of(prefix), _sidecar(prefix)]:
            if path.exists():
                shutil.move(str(path), target / path.name)


class CheckpointStore:
    """The run's two folders: ``latest/`` (every save) and ``best/`` (the ledger's top k)."""

    def __init__(
        self,
        run_dir: str | Path,
        state: TrainingState,
        describe: dict,
        max_to_keep: int = 3,
        best_metric: str = "referable_auc",
        best_mode: str = "max",
        background: bool = False,
        chief: bool = True,
    ):
        if best_metric not in VALIDATION_METRICS:
            raise CheckpointError(
                f"checkpoint.best_metric={best_metric!r}; use one of {VALIDATION_METRICS}."
            )
        self.run_dir = Path(run_dir)
        self.state = state
        self.latest = CheckpointFolder(self.run_dir / LATEST_DIR, state, describe)
        self.best = CheckpointFolder(self.run_dir / BEST_DIR, state, describe)
        self.max_to_keep = max_to_keep
        self.best_metric, self.best_mode = best_metric, best_mode
        self.chief = chief
        background = background and chief
        self._snapshotter = Snapshotter(state.checkpoint) if background else None
        self._writer = ThreadPoolExecutor(1, "checkpoint-writer") if background else None
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
            int(self.state.step.numpy()),
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
        ledger = {int(s) for s in self.state.best_steps.numpy() if s >= 0}
        if self._snapshotter is None:
            self._commit(jobs, None, ledger)
        else:
            snapshot = self._snapshotter.snapshot()
            self._pending = self._writer.submit(self._commit, jobs, snapshot, ledger)
        return jobs[0]["prefix"]

    def _write_and_discard(self) -> Path:
        """A non-chief worker's save (multi-worker): it writes like the chief, because a
        save may need every worker, but into a temporary folder that it then deletes; the
        chief's copy in the run directory is the checkpoint. Returns the chief's prefix."""
        step = int(self.state.step.numpy())
        folder = tempfile.mkdtemp(prefix="retina-worker-checkpoint-")
        try:
            self.state.checkpoint.write(os.path.join(folder, f"ckpt-{step}"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return self.latest.directory / f"ckpt-{step}"

    def _commit(self, jobs: list[dict], snapshot, ledger: set[int]) -> None:
        for job in jobs:
            (self.latest if job["kind"] == "latest" else self.best).commit(job, snapshot)
        self.latest.keep_only({_step_of(p) for p in self.latest.prefixes()[: self.max_to_keep]})
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

    def _sync_best(self) -> None:
        """After a restore, makes ``best/`` hold exactly the restored ledger's checkpoints."""
        ledger = {int(s) for s in self.state.best_steps.numpy() if s >= 0}
        step = int(self.state.step.numpy())
        if step in ledger and step not in {_step_of(p) for p in self.best.prefixes()}:
            self.best.save("best")  # the state is the one ranked: finish the interrupted write
        self.best.keep_only(ledger)
        self.best.update_state_file()

    def _check_state_file(self) -> None:
        """TF's state file is rewritten from the sidecars; say so when it was damaged."""
        path = self.latest.directory / "checkpoint"
        if not path.exists():
            return
        try:
            readable = tf.train.get_checkpoint_state(str(self.latest.directory)) is not None
        except Exception:  # TF raises ValueError or a protobuf ParseError, by content
            readable = False
        if not readable:
            log.warning("%s is empty or garbled; rebuilding it from the checkpoint sidecars.", path)

    def restore(self) -> Path | None:
        """Restores the newest intact ``latest/`` checkpoint; None when there is none.

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
        _verified_read(
            lambda: self.state.checkpoint.read(str(prefix)),
            prefix,
            complete=True,
            describe=self.latest.describe,
        )


def _verified_read(read, path, complete: bool, describe: dict | None = None) -> None:
    """Reads, then verifies; TF's shape errors and failed assertions become one error that
    names the checkpoint, the first mismatching variable and the config values that differ.

    Args:
        read: performs the read and returns TF's load status.
        path: the checkpoint prefix.
        complete: also require every saved value to be consumed (a full-state restore).
        describe: the current run's sidecar facts, compared with the checkpoint's.
    """
    try:
        status = read()
        if complete:
            status.assert_consumed()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0][:300]
        raise CheckpointError(
            f"{path} does not match the model and optimizer built from this config: "
            f"{first_line}.{_config_differences(path, describe)} Use the config the run was "
            "trained with (its config.yaml), or start a new run directory."
        ) from None


def _config_differences(path, describe: dict | None) -> str:
    """' Config differs: model.widths: checkpoint [8, 16], now [8, 24].' or ''."""
    try:
        saved = read_sidecar(path).get("model_config", {})
    except (OSError, json.JSONDecodeError):
        return ""
    now = (describe or {}).get("model_config", {})
    changed = [
        f"{key}: checkpoint {saved.get(key)!r}, now {now.get(key)!r}"
        for key in sorted(set(saved) | set(now))
        if saved.get(key) != now.get(key)
    ]
    return f" Config differs: {'; '.join(changed)}." if changed else ""


def restore_weights(model: keras.Model, path: str | Path) -> None:
    """Reads only the model's weights (evaluation, fine-tuning), verifying all were found;
    the weight averages instead where the run kept them (``train.ema_decay``)."""
    why = damage(Path(path))
    if why:
        raise CheckpointError(f"{path} cannot be used: {why}.")
    checkpoint = tf.train.Checkpoint(model=model)
    _verified_read(lambda: checkpoint.read(str(path)).expect_partial(), path, complete=False)
    saved = tf.train.load_checkpoint(str(path)).get_variable_to_shape_map()
    if any(key.startswith("ema/") for key in saved):
        # Validation ranked this checkpoint with the averaged weights: use them.
        averages = tf.train.Checkpoint(ema=averaged_variables(model))
        _verified_read(lambda: averages.read(str(path)).expect_partial(), path, complete=False)


def read_operating_points(path: str | Path) -> dict[str, float]:
    """The referral thresholds a checkpoint was saved with (chosen on validation)."""
    reader = tf.train.load_checkpoint(str(path))
    return {
        name: float(reader.get_tensor(f"operating_points/{name}/.ATTRIBUTES/VARIABLE_VALUE"))
        for name in OPERATING_POINTS
    }


def find_checkpoint(run_dir: str | Path, name: str = "latest") -> Path:
    """Resolves ``latest``, ``best`` or a name such as ``ckpt-120`` inside a run."""
    run_dir = Path(run_dir)
    if name in ("latest", "best"):
        prefixes = CheckpointFolder(run_dir / name, None, {}).prefixes()
        if name == "best":
            prefixes = _best_first(prefixes)
        found = prefixes[0] if prefixes else None
    else:
        candidates = [run_dir / LATEST_DIR / name, run_dir / BEST_DIR / name]
        found = next((p for p in candidates if _sidecar(p).exists()), None)
    if found is None:
        raise CheckpointError(
            f"no checkpoint {name!r} in {run_dir}; train the run first "
            "(python -m retina.train hydra.run.dir=<run_dir>)."
        )
    return found


def resolve_checkpoint(reference: str | Path) -> Path:
    """A checkpoint from ``<run_dir>`` (its latest), ``<run_dir>/best``, ``<run_dir>/latest``
    or a checkpoint prefix such as ``<run_dir>/latest/ckpt-120``."""
    path = Path(reference)
    if _sidecar(path).exists():
        return path
    if path.name in (LATEST_DIR, BEST_DIR) and path.is_dir():
        return find_checkpoint(path.parent, path.name)
    return find_checkpoint(path, LATEST_DIR)


def _best_first(prefixes: list[Path]) -> list[Path]:
    """Orders best/ by the newest ledger: the sidecar of the newest best checkpoint."""
    if not prefixes:
        return prefixes
    ledger = read_sidecar(prefixes[0]).get("best_ledger") or []
    by_step = {_step_of(p): p for p in prefixes}
    ordered = [by_step[s] for s in ledger if s in by_step]
    return ordered or prefixes


class RunLock:
    """Refuses a second training process on the same run directory.

    ``flock`` on ``<run_dir>/.lock``: the kernel releases it when the owner dies, so a
    killed run never leaves a stale lock. The owner's pid is written for the message.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._handle = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise CheckpointError(
                f"{self.path.parent} is in use by another training process (pid {owner}); "
                "wait for it to finish or stop it, or use another run directory."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

"""One folder of verified checkpoints (``latest/`` or ``best/``): save steps 1-4 for one
checkpoint, pruning, orphan clean-up, quarantine and TF's state file."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from retina.checkpoint.files import (
    CHECKPOINT_NAME,
    complete_prefixes,
    data_files,
    fault_point,
    library_versions,
    sidecar_path,
    step_of,
)
from retina.checkpoint.state import TrainingState
from retina.errors import CheckpointError, TrainingDiverged
from retina.files import TEMP_SUFFIX, file_sha256, write_atomically
from retina.run_dir import QUARANTINE_DIR

TF_STATE_FILE = "checkpoint"


class CheckpointFolder:
    """One folder of verified checkpoints.

    Args:
        directory: the folder.
        state: the training state written and read.
        describe: JSON-able facts stored in every sidecar (config hash, model config...).
    """

    def __init__(self, directory: str | Path, state: TrainingState | None, describe: dict):
        self.directory = Path(directory)
        self.state = state
        self.describe = describe

    def prefixes(self) -> list[Path]:
        """Complete-looking checkpoints (those with a sidecar), newest step first."""
        return complete_prefixes(self.directory)

    def prepare(self, kind: str) -> dict:
        """Save order step 1, on the training thread: refuse non-finite weights, fix the
        prefix and the sidecar facts of the state as it is now."""
        step = self.state.current_step
        if not self.state.weights_are_finite():
            raise TrainingDiverged(
                f"step {step}: the weights hold NaN or Inf; not saving them over the good "
                f"checkpoints in {self.directory}. Lower optimizer.learning_rate, or set "
                "train.on_nonfinite=rollback."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        prefix = self.directory / f"ckpt-{step}"
        sidecar_path(prefix).unlink(missing_ok=True)  # a re-save is incomplete until step 3
        meta = {
            "name": prefix.name,
            "kind": kind,
            "step": step,
            "epoch": int(self.state.epoch.numpy()),
            "metrics": self.state.metric_values(),
            "train": self.state.epoch_means(),
            "best_ledger": self.state.ledger_steps(),
            "versions": library_versions(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.describe,
        }
        return {"prefix": prefix, "kind": kind, "step": step, "meta": meta}

    def commit(self, job: dict, write_data: Callable[[str], object] | None = None) -> Path:
        """Save order steps 2-3: the data (``write_data(prefix)``, by default the live
        state's ``Checkpoint.write``), then hashes, fsync and the sidecar."""
        prefix, step, kind = job["prefix"], job["step"], job["kind"]
        write_data = write_data or self.state.checkpoint.write
        try:
            write_data(str(prefix))
            fault_point(f"{kind}_after_data", step)
            files = {p.name: file_sha256(p, sync=True) for p in data_files(prefix)}
            meta = {**job["meta"], "files": files}
            write_atomically(sidecar_path(prefix), json.dumps(meta, indent=2, default=float) + "\n")
        except (OSError, tf.errors.OpError) as error:
            self.remove(prefix)
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
        """Save order step 4: rewrites TF's ``checkpoint`` file (for
        ``tf.train.latest_checkpoint`` and other TF tools) from the sidecars, oldest first as
        TF lists them."""
        prefixes = self.prefixes()
        if prefixes:
            lines = [f'model_checkpoint_path: "{prefixes[0].name}"']
            lines += [f'all_model_checkpoint_paths: "{p.name}"' for p in reversed(prefixes)]
            write_atomically(self.directory / TF_STATE_FILE, "\n".join(lines) + "\n")

    def keep_only(self, steps: set[int]) -> None:
        for prefix in self.prefixes():
            if step_of(prefix) not in steps:
                self.remove(prefix)

    @staticmethod
    def remove(prefix: Path) -> None:
        sidecar_path(prefix).unlink(missing_ok=True)  # first: a half-removed one is incomplete
        for path in data_files(prefix):
            path.unlink(missing_ok=True)

    def clean_orphans(self) -> list[str]:
        """Removes temp files of killed saves and data files without a sidecar."""
        removed = []
        if not self.directory.exists():
            return removed
        complete = {p.name for p in self.prefixes()}
        for path in self.directory.iterdir():
            base = path.name.split(".")[0]
            temp = "_temp" in path.name or path.name.endswith(TEMP_SUFFIX)
            orphan = CHECKPOINT_NAME.match(base) and base not in complete
            if temp or orphan:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path.name)
        return removed

    def quarantine(self, prefix: Path, run_dir: Path) -> None:
        target = run_dir / QUARANTINE_DIR / f"{self.directory.name}-{prefix.name}"
        target.mkdir(parents=True, exist_ok=True)
        for path in [*data_files(prefix), sidecar_path(prefix)]:
            if path.exists():
                shutil.move(str(path), target / path.name)

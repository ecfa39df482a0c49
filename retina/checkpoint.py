"""The checkpoint layer: every checkpoint read and write of the project goes through here.

A checkpoint holds the training *state*, not just weights: step, epoch, model, optimizer
(moments and loss scale included), the training-data iterator, the Keras dropout RNG
states and the latest validation metrics. Resuming from it continues the same run.

Restore order (each step needs the one before it):
  1. Set the dtype policy, then build the model from the run's config.
  2. Build every optimizer on its variables. Keras 3 creates moment variables lazily;
     unbuilt, their saved values would wait in deferred restoration, where nothing can
     check them, and ``assert_consumed()`` would fail on a good checkpoint.
  3. Create the training-data iterator; its position is part of the state.
  4. Read the checkpoint into the state.
  5. Verify: every saved value was consumed and every live object was matched. A
     partial restore stops the run instead of silently training a half-restored model.
  6. Train from ``step + 1``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import tensorflow as tf

from retina.errors import CheckpointError

log = logging.getLogger(__name__)

VALIDATION_METRICS = ("referable_auc", "sensitivity", "specificity", "quadratic_weighted_kappa")


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


class TrainingState:
    """Everything that must survive a restart, as one ``tf.train.Checkpoint``."""

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        iterator: tf.data.Iterator | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.metrics = {
            name: tf.Variable(float("nan"), trainable=False, name=f"val_{name}")
            for name in VALIDATION_METRICS
        }
        parts = dict(
            step=self.step,
            epoch=self.epoch,
            model=model,
            optimizer=optimizer,
            rng=seed_generator_states(model),
            metrics=self.metrics,
        )
        if iterator is not None:
            parts["iterator"] = iterator
        self.checkpoint = tf.train.Checkpoint(**parts)

    def record_metrics(self, metrics: dict) -> None:
        for name, variable in self.metrics.items():
            variable.assign(float(metrics[name]))

    def metric_values(self) -> dict[str, float]:
        return {name: float(variable.numpy()) for name, variable in self.metrics.items()}


class CheckpointStore:
    """A ``CheckpointManager`` over one folder, with verified restores."""

    def __init__(self, directory: str | Path, state: TrainingState, max_to_keep: int = 3):
        self.directory = Path(directory)
        self.state = state
        self.manager = tf.train.CheckpointManager(
            state.checkpoint, str(self.directory), max_to_keep=max_to_keep, step_counter=state.step
        )

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def save(self) -> str:
        """Writes the state as ``ckpt-<step>``; returns its path prefix."""
        return self.manager.save(checkpoint_number=int(self.state.step))

    def restore_latest(self) -> str | None:
        """Restores and verifies the newest checkpoint; returns its path, or None if none."""
        path = self.latest
        if path is None:
            return None
        _verified_read(lambda: self.state.checkpoint.restore(path), path, complete=True)
        return path


def restore_weights(model: keras.Model, path: str) -> None:
    """Reads only the model's weights (evaluation, fine-tuning), verifying all were found."""
    checkpoint = tf.train.Checkpoint(model=model)
    _verified_read(lambda: checkpoint.read(path).expect_partial(), path, complete=False)


def _verified_read(read, path: str, complete: bool) -> None:
    """Reads, then verifies; TF's shape errors and failed assertions become one error that
    says which checkpoint and what to do.

    Args:
        read: performs the read and returns TF's load status.
        path: the checkpoint prefix, for the message.
        complete: also require every saved value to be consumed (a full-state restore).
    """
    try:
        status = read()
        if complete:
            status.assert_consumed()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0][:400]
        raise CheckpointError(
            f"{path} does not match the model and optimizer built from this config: "
            f"{first_line}. Use the config the run was trained with (its config.yaml), "
            "or start a new run directory."
        ) from None


def find_checkpoint(run_dir: str | Path, name: str = "latest") -> str:
    """Resolves ``latest`` or a checkpoint name such as ``ckpt-120`` inside a run."""
    folder = Path(run_dir) / "latest"
    if name == "latest":
        path = tf.train.latest_checkpoint(str(folder))
    else:
        path = str(folder / name) if (folder / f"{name}.index").exists() else None
    if path is None:
        raise CheckpointError(
            f"no checkpoint {name!r} in {folder}; train the run first "
            "(python -m retina.train hydra.run.dir=<run_dir>)."
        )
    return path

"""Point-in-time snapshots of a ``tf.train.Checkpoint``, written later by another thread.

Used only by the checkpoint store for its non-blocking save. TF's own
``CheckpointOptions(experimental_enable_async_checkpoint=True)`` fails on the second save
with a Keras 3 model: ``KerasVariable._copy_trackable_to_cpu`` creates a new
``tf.Variable`` on every call, and from the second save on TF calls it inside a
``tf.function`` ("tf.function only supports singleton tf.Variables created on the first
call"). Instead:

  * ``snapshot()`` runs on the training thread: one compiled call reads every variable
    and serializes the tf.data iterator. TF's resource-variable updates copy a buffer that
    something else still holds, so training can go on without changing the snapshot.
  * The checkpoint keys and object-graph proto come from TF's own serialization pass
    (``_gather_serialized_tensors``), cached and rebuilt when the object graph changes.
  * ``write()`` hands the snapshot to TF's ``MultiDeviceSaver``: same keys, object graph
    and file format as ``Checkpoint.write``, so a plain ``Checkpoint.read`` restores it.

This relies on TF internals, checked on TF 2.21 (the version pyproject.toml pins). They are
looked up when a ``Snapshotter`` is made: if a TF upgrade moved them, that raises
ImportError or AttributeError, and the store saves on the training thread instead.
"""

from __future__ import annotations

import importlib
import warnings
from types import SimpleNamespace

import tensorflow as tf


def tf_internals() -> SimpleNamespace:
    """The private TensorFlow pieces the snapshot writer needs (ImportError or
    AttributeError when a TensorFlow version lacks one)."""

    def module(name: str):
        return importlib.import_module(f"tensorflow.python.{name}")

    saveable_util = module("training.saving.saveable_object_util")
    return SimpleNamespace(
        MultiDeviceSaver=module("checkpoint.functional_saver").MultiDeviceSaver,
        escape_local_name=module("trackable.trackable_utils").escape_local_name,
        SaveSpec=module("training.saving.saveable_object").SaveSpec,
        Converter=saveable_util.SaveableCompatibilityConverter,
        IdentityDict=module("util.object_identity").ObjectIdentityDictionary,
    )


def _resolve(value, save_spec: type):
    """A SaveSpec (lazy read) as its tensor; dicts (sliced values) element-wise."""
    if isinstance(value, dict):
        return {k: _resolve(v, save_spec) for k, v in value.items()}
    return value.tensor if isinstance(value, save_spec) else value


class Snapshotter:
    """Takes snapshots of one ``tf.train.Checkpoint`` and writes them as checkpoints."""

    def __init__(self, checkpoint: tf.train.Checkpoint):
        self._tf = tf_internals()
        self._gather = checkpoint._saver._gather_serialized_tensors  # AttributeError if gone
        self._checkpoint = checkpoint
        self._plan = None
        self._fingerprint_of_plan = None

    def _fingerprint(self) -> tuple:
        """A cheap (~30 us) sign that the object graph changed: the root's children and
        how many variables each holds."""
        children = self._checkpoint._trackable_children(save_type="checkpoint")
        return tuple(
            (
                name,
                id(child),
                -1 if isinstance(child, tf.Variable) else len(getattr(child, "variables", ())),
            )
            for name, child in sorted(children.items())
        )

    def _build_plan(self) -> None:
        """TF's full serialization pass (~10 ms), and one traced function reading it all."""
        tensors, feeds, registered, _ = self._gather(None)
        if feeds or registered:
            raise NotImplementedError("Python-state objects and registered savers")
        lazy, static, refresh = [], [], []
        for trackable, values in tensors.items():
            if trackable is None:  # the object-graph proto
                static += list(values.items())
            elif all(
                isinstance(v, self._tf.SaveSpec) and callable(v._tensor) for v in values.values()
            ):
                lazy += [(trackable, key, spec) for key, spec in values.items()]  # variables
            else:  # tf.data iterators and other objects serialised on demand
                refresh.append((trackable, values))

        converter = self._tf.Converter

        @tf.function
        def read_all():
            objects = [t.obj if isinstance(t, converter) else t for t, _ in refresh]
            return [spec.tensor for _, _, spec in lazy], [
                obj._serialize_to_tensors() for obj in objects
            ]

        self._plan = (lazy, static, refresh, read_all)
        self._fingerprint_of_plan = self._fingerprint()

    def snapshot(self):
        """Every value of the checkpoint as it is now: ``{trackable: {key: tensor}}``."""
        if self._plan is None or self._fingerprint_of_plan != self._fingerprint():
            self._build_plan()
        lazy, static, refresh, read_all = self._plan
        with warnings.catch_warnings():  # tracing the iterator's serialization warns once
            warnings.filterwarnings("ignore", "To make it possible to preserve tf.data options")
            values, serialized = read_all()
        internals = self._tf
        snap = internals.IdentityDict()  # variables are unhashable
        snap[None] = dict(static)
        for (trackable, key, _), value in zip(lazy, values, strict=True):
            snap.setdefault(trackable, {})[key] = value
        for (trackable, keys), fresh in zip(refresh, serialized, strict=True):
            if isinstance(trackable, internals.Converter) and len(keys) == len(fresh) == 1:
                value = _resolve(next(iter(fresh.values())), internals.SaveSpec)
                snap[trackable] = {next(iter(keys)): value}
            else:  # key = <path>/.ATTRIBUTES/<local name>
                local = {internals.escape_local_name(n): v for n, v in fresh.items()}
                snap[trackable] = {
                    k: _resolve(local[k.rsplit("/", 1)[1]], internals.SaveSpec) for k in keys
                }
        return snap

    def write(self, snap, prefix: str) -> None:
        """Writes a snapshot at ``prefix`` (TF writes temp files and renames them)."""
        self._tf.MultiDeviceSaver(snap).save(prefix)

"""Reading checkpoints back: verified reads, weights only, operating points, and finding a
checkpoint by name."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import tensorflow as tf

from retina.checkpoint.files import complete_prefixes, damage, read_sidecar, sidecar_path, step_of
from retina.checkpoint.state import OPERATING_POINTS, averaged_variables
from retina.errors import CheckpointError
from retina.models.grading import ORDINAL_HEADS, Grading
from retina.models.heads import LOGITS_LAYER, POOL_LAYER
from retina.run_dir import BEST_DIR, LATEST_DIR


def verified_read(read, path, complete: bool, describe: dict | None = None) -> None:
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
            f"{first_line}.{config_differences(path, describe)} Use the config the run was "
            "trained with (its config.yaml), or start a new run directory."
        ) from None


def config_differences(path, describe: dict | None) -> str:
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
    checkpoint = tf.train.Checkpoint(model=_as_saved(model, path))
    verified_read(lambda: checkpoint.read(str(path)).expect_partial(), path, complete=False)
    saved = tf.train.load_checkpoint(str(path)).get_variable_to_shape_map()
    if any(key.startswith("ema/") for key in saved):
        # Validation ranked this checkpoint with the averaged weights: use them.
        averages = tf.train.Checkpoint(ema=averaged_variables(model))
        verified_read(lambda: averages.read(str(path)).expect_partial(), path, complete=False)


def _as_saved(model: keras.Model, path: str | Path):
    """The model, or a view of it numbered as a checkpoint from before the keras.applications
    backbones handed their feature map to a weightless ``head_pool`` layer (they pooled
    inside): the same layers, that layer left out. Checkpoint keys number a model's
    operations (``model/_operations/<i>/...``), and only the layers after it moved."""
    names = [operation.name for operation in getattr(model, "operations", [])]
    if POOL_LAYER not in names or LOGITS_LAYER not in names:
        return model
    saved = tf.train.load_checkpoint(str(path)).get_variable_to_shape_map()
    logits = names.index(LOGITS_LAYER)
    kernel = "model/_operations/{}/_kernel/.ATTRIBUTES/VARIABLE_VALUE"
    if kernel.format(logits) in saved or kernel.format(logits - 1) not in saved:
        return model
    view = tf.Module()
    view._operations = [op for op in model.operations if op.name != POOL_LAYER]
    return view


def read_operating_points(path: str | Path) -> dict[str, float]:
    """The referral thresholds a checkpoint was saved with (chosen on validation)."""
    reader = tf.train.load_checkpoint(str(path))
    return {
        str(name): float(reader.get_tensor(f"operating_points/{name}/.ATTRIBUTES/VARIABLE_VALUE"))
        for name in OPERATING_POINTS
    }


def read_grading(path: str | Path, head: str) -> Grading:
    """The grading a checkpoint of a ``head`` run was saved with: its fitted cut-points and
    regression link (ordinal and regression heads), the head's own rule otherwise."""
    if head not in ORDINAL_HEADS:
        return Grading(head)
    reader = tf.train.load_checkpoint(str(path))
    values = {
        name: tuple(reader.get_tensor(f"grading/{name}/.ATTRIBUTES/VARIABLE_VALUE").tolist())
        for name in ("cut_points", "link")
    }
    return Grading(head, values["cut_points"], values["link"])


QUALITY_PREFIX = "quality/"


def read_quality(path: str | Path) -> dict | None:
    """The quality gate's fitted state a checkpoint was saved with, by name (arrays); None
    when it has none (a run from before the gate, or ``quality.enabled`` off)."""
    reader = tf.train.load_checkpoint(str(path))
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    return {
        key.removeprefix(QUALITY_PREFIX).removesuffix(suffix): reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith(QUALITY_PREFIX) and key.endswith(suffix)
    } or None


def newest_has_quality(run_dir: str | Path) -> bool:
    """Whether the newest complete checkpoint of ``latest/`` holds a quality gate (a run
    started before the gate resumes without one)."""
    for prefix in complete_prefixes(Path(run_dir) / LATEST_DIR):
        if not damage(prefix):  # a damaged one: the restore will quarantine it
            keys = tf.train.load_checkpoint(str(prefix)).get_variable_to_shape_map()
            return any(key.startswith(QUALITY_PREFIX) for key in keys)
    return False


def find_checkpoint(run_dir: str | Path, name: str = "latest") -> Path:
    """Resolves ``latest``, ``best`` or a name such as ``ckpt-120`` inside a run."""
    run_dir = Path(run_dir)
    if name in (LATEST_DIR, BEST_DIR):
        prefixes = complete_prefixes(run_dir / name)
        if name == BEST_DIR:
            prefixes = _best_first(prefixes)
        found = prefixes[0] if prefixes else None
    else:
        candidates = [run_dir / LATEST_DIR / name, run_dir / BEST_DIR / name]
        found = next((p for p in candidates if sidecar_path(p).exists()), None)
    if found is None:
        existing = [
            p.name for folder in (LATEST_DIR, BEST_DIR) for p in complete_prefixes(run_dir / folder)
        ]
        if existing:
            raise CheckpointError(
                f"no checkpoint {name!r} in {run_dir}; it has latest, best and "
                f"{sorted(set(existing), key=lambda n: int(n.split('-')[1]))}."
            )
        raise CheckpointError(
            f"no checkpoint {name!r} in {run_dir}; train the run first "
            "(python -m retina.train hydra.run.dir=<run_dir>)."
        )
    return found


def resolve_checkpoint(reference: str | Path) -> Path:
    """A checkpoint from ``<run_dir>`` (its latest), ``<run_dir>/best``, ``<run_dir>/latest``
    or a checkpoint prefix such as ``<run_dir>/latest/ckpt-120``."""
    path = Path(reference)
    if sidecar_path(path).exists():
        return path
    if path.name in (LATEST_DIR, BEST_DIR) and path.is_dir():
        return find_checkpoint(path.parent, path.name)
    return find_checkpoint(path, LATEST_DIR)


def _best_first(prefixes: list[Path]) -> list[Path]:
    """Orders best/ by the newest ledger: the sidecar of the newest best checkpoint."""
    if not prefixes:
        return prefixes
    ledger = read_sidecar(prefixes[0]).get("best_ledger") or []
    by_step = {step_of(p): p for p in prefixes}
    ordered = [by_step[s] for s in ledger if s in by_step]
    return ordered or prefixes

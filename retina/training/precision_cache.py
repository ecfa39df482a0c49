"""Where ``train.precision=auto`` keeps what it measured, so a machine measures once.

One JSON file per measurement key (CPU model and its precision flags, TensorFlow version,
model config, image size, batch size, XLA), in ``train.precision_cache`` (default
``$XDG_CACHE_HOME/retina/precision``, else ``~/.cache/retina/precision``). Files are written
whole (temporary file, rename) under an exclusive lock of their own, so concurrent runs
(sweep jobs) measure a key once and never read half a file. A file that does not parse,
lacks a figure or holds another key's measurement is ignored with a warning and rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from retina.files import text_sha256, write_json

log = logging.getLogger(__name__)
SCHEMA = 1


def cache_folder(configured: str = "") -> Path:
    """``train.precision_cache`` if set, else the per-user cache folder."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "retina" / "precision"


def cache_file(folder: Path, key: dict) -> Path:
    """A readable name for the key's file, made unique by the key's hash."""
    digest = text_sha256(json.dumps(key, sort_keys=True))[:12]
    name = f"{key['model']['name']}-{key['image_size']}px-b{key['batch_size']}-{digest}.json"
    return folder / name


def _problem(record, key: dict, policies: tuple[str, ...]) -> str:
    """Why a parsed file cannot be used ('' when it can)."""
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return "it is not a measurement file of this version"
    if record.get("key") != key:
        return "it holds the measurement of another CPU, TensorFlow or model"
    figures = record.get("images_per_s")
    good = isinstance(figures, dict) and all(
        isinstance(figures.get(p), int | float) and math.isfinite(figures[p]) and figures[p] > 0
        for p in policies
    )
    return "" if good else f"it lacks a positive images/s figure for each of {', '.join(policies)}"


def read_measurement(path: Path, key: dict, policies: tuple[str, ...]) -> dict | None:
    """The stored measurement for ``key``; None (with a warning when a file was there but
    unusable) when it must be measured."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problem = f"it does not parse ({error})"
    else:
        problem = _problem(record, key, policies)
        if not problem:
            return record
    log.warning("Ignoring the precision measurement in %s: %s; measuring again.", path, problem)
    return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path``'s own lock file (released when the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cached_measurement(
    folder: Path, key: dict, policies: tuple[str, ...], measure: Callable[[], dict]
) -> tuple[dict, Path, bool]:
    """(record, its file, whether it was measured now): the stored record for ``key``, or
    ``measure()``'s ``{"images_per_s": ..., ...}`` stored first."""
    path = cache_file(folder, key)
    with locked(path):
        record = read_measurement(path, key, policies)
        if record is not None:
            return record, path, False
        return write_measurement(path, key, measure()), path, True


def write_measurement(path: Path, key: dict, figures: dict) -> dict:
    """Stores ``figures`` (``{"images_per_s": {policy: value}, ...}``) as ``key``'s record;
    call under ``locked(path)``."""
    record = {
        "schema": SCHEMA,
        "key": key,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **figures,
    }
    write_json(path, record)
    return record

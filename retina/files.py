"""Whole-file writes that a crash cannot leave half done, and file hashes.

Every JSON, CSV, Markdown and PNG file the project writes whole goes through
``write_atomically``: a temporary file beside the target, flushed to disk, renamed over
the target, and the folder synced so the rename itself survives a power cut. A reader
sees the old file or the new one, never a mix. Append-only logs (``steps.csv``,
``history.csv``, ``bad_inputs.csv``) are appended line by line instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

# The suffix every temporary file ends in: the checkpoint layer removes such leftovers of
# a killed write at the next start.
TEMP_SUFFIX = ".tmp"


def temporary_path(path: Path) -> Path:
    """A hidden sibling of ``path``, unique per process and thread (parallel sweep jobs may
    write the same file at the same moment)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}{TEMP_SUFFIX}")


def write_atomically(
    path: str | Path, content: str | bytes | Callable[[Path], object], durable: bool = True
) -> Path:
    """Replaces ``path`` with ``content`` in one step.

    Args:
        path: the file to write; its folder must exist.
        content: text (UTF-8), bytes, or a function that writes the file at the path it is
            given (``DataFrame.to_csv``, ``Figure.savefig``, ``Image.save``...).
        durable: fsync the file and its folder. Off only for files that can be rebuilt
            (the preprocessing cache), where the rename alone keeps readers safe.

    Returns:
        ``path``.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, a device such as /dev/null
        raise ValueError(f"{path} is not a regular file; refusing to replace it.")
    partial = temporary_path(path)
    try:
        if isinstance(content, str):
            partial.write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            partial.write_bytes(content)
        else:
            content(partial)
        if durable:
            fsync_file(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    if durable:
        fsync_directory(path.parent)
    return path


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(folder: str | Path) -> None:
    """A rename is durable only once its folder is synced."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_sha256(path: str | Path, sync: bool = False) -> str:
    """The file's SHA-256; with ``sync``, also forces it to disk (TensorFlow does not fsync
    what it writes), so a record of the hash never vouches for data a power cut could lose."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if sync:
            os.fsync(handle.fileno())
    return digest


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def json_ready(value):
    """NaN and infinities become null (valid JSON); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: dict, sort_keys: bool = False) -> Path:
    """``data`` as indented JSON, atomically; NaN written as null."""
    text = json.dumps(json_ready(data), indent=2, sort_keys=sort_keys) + "\n"
    return write_atomically(path, text)


def read_json(path: str | Path) -> dict:
    """The JSON object in ``path``; {} when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}

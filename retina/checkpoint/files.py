"""The files of one checkpoint: its data, its sidecar, and whether they can be trusted.

A checkpoint ``<folder>/ckpt-<step>`` is TensorFlow's ``.index`` and ``.data-*`` files plus
``ckpt-<step>.meta.json``, the sidecar: step, metrics, library versions, facts about the
run, and the SHA-256 of every data file. The sidecar is written last, so a checkpoint
without one is an interrupted save.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from retina.files import file_sha256
from retina.run_dir import LATEST_DIR

SIDECAR_SUFFIX = ".meta.json"
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)$")
FAULT_ENV = "RETINA_FAULT"  # tests only: "<point>:<step>[#n]" kills the process there


def data_files(prefix: Path) -> list[Path]:
    """The ``.index`` and ``.data-*`` files TensorFlow wrote at ``prefix``."""
    folder, name = prefix.parent, prefix.name
    return sorted(folder.glob(f"{name}.index")) + sorted(folder.glob(f"{name}.data-*"))


def step_of(prefix: Path) -> int:
    return int(CHECKPOINT_NAME.match(prefix.name).group(1))


def sidecar_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + SIDECAR_SUFFIX)


def read_sidecar(prefix: str | Path) -> dict:
    return json.loads(sidecar_path(Path(prefix)).read_text())


def complete_prefixes(folder: Path) -> list[Path]:
    """The checkpoints in ``folder`` that have a sidecar, newest step first."""
    found = []
    for sidecar in Path(folder).glob(f"ckpt-*{SIDECAR_SUFFIX}"):
        match = CHECKPOINT_NAME.match(sidecar.name[: -len(SIDECAR_SUFFIX)])
        if match:
            found.append((int(match.group(1)), sidecar.with_name(match.group(0))))
    return [prefix for _, prefix in sorted(found, reverse=True)]


def has_checkpoints(run_dir: str | Path) -> bool:
    """Whether a run directory holds a saved state to resume from (complete or damaged)."""
    return any((Path(run_dir) / LATEST_DIR).glob(f"ckpt-*{SIDECAR_SUFFIX}"))


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
        if file_sha256(path) != expected:
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


_faults_reached: Counter[str] = Counter()


def fault_point(point: str, step: int) -> None:
    """Crash-test hook: ``RETINA_FAULT=<point>:<step>`` SIGKILLs the process right here, and
    ``<point>:<step>#<n>`` the n-th time the process gets here (the n-th job of a sweep)."""
    wanted, _, nth = os.environ.get(FAULT_ENV, "").partition("#")
    if wanted == f"{point}:{step}":
        _faults_reached[wanted] += 1
        if _faults_reached[wanted] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)

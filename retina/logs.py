"""Where log lines go: Python warnings into the log, a worker's lines into its own file."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path


def _one_line(message, category, filename, lineno, line=None) -> str:
    return f"{category.__name__}: {message}"


def route_warnings_to_log() -> None:
    """``warnings.warn`` from library code (an undefined metric, say) becomes one log line of
    the ``py.warnings`` logger instead of a raw warning with a source line on stderr."""
    warnings.formatwarning = _one_line
    logging.captureWarnings(True)


def quiet_library_loggers() -> None:
    """absl and TensorFlow's own logger (collectives, preemption handler) log internals at
    INFO that a user has no use for."""
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def redirect_file_log(path: Path) -> None:
    """Every file handler of the root logger writes to ``path`` instead (a non-chief worker
    logs to its own file, not into the chief's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()
        replacement = logging.FileHandler(path)
        replacement.setFormatter(handler.formatter)
        root.addHandler(replacement)

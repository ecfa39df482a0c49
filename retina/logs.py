"""Where log lines go: Python warnings into the log, a worker's lines into its own file,
TensorFlow's C++ start-up chatter nowhere."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

# What TensorFlow's C++ side prints while it starts, before its own log level applies:
# the absl notice, CUDA probing on machines without a GPU, the CPU feature banner.
TENSORFLOW_START_UP_NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuda_platform|cuda_executor|failed call to cuInit"
    r"|cpu_feature_guard|To enable the following instructions|rebuild TensorFlow"
    r"|oneDNN custom operations|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer|TF-TRT Warning"
)


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


@contextlib.contextmanager
def stderr_without(pattern: re.Pattern):
    """Lines written to file descriptor 2 inside the block (by C++ code too) that match
    ``pattern`` are dropped; the others are passed on when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [line for line in text.splitlines(True) if not pattern.search(line)]
            sys.stderr.write("".join(kept))


def start_tensorflow_quietly() -> None:
    """Imports TensorFlow and lists its devices (which probes CUDA) without the start-up
    noise, unless the user set TF_CPP_MIN_LOG_LEVEL and so asked for TensorFlow's own
    logging. ``TF_ENABLE_ONEDNN_OPTS`` is left alone: turning oneDNN off changes numerics
    and loses the CPU's bfloat16 speed-up."""
    from retina import USER_SET_TF_LOG_LEVEL

    quiet = (
        contextlib.nullcontext()
        if USER_SET_TF_LOG_LEVEL
        else stderr_without(TENSORFLOW_START_UP_NOISE)
    )
    with quiet:
        import tensorflow as tf

        tf.config.list_physical_devices()

"""How the program talks to its user, shared by every entry point.

- The log: Python warnings become log lines, a worker's lines go to its own file, and
  TensorFlow's C++ start-up chatter is hidden.
- Errors: a user error ends the program with a one-line message and exit status 2 instead
  of a traceback (an unknown ``group=option`` before Hydra starts); a preempted run exits
  with 75.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from retina.errors import EXIT_PREEMPTED, EXIT_USER_ERROR, Preempted, RetinaError, WorkerLost

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


def exit_on_user_error(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        quiet_library_loggers()
        route_warnings_to_log()
        start_tensorflow_quietly()
        log = logging.getLogger("retina")
        try:
            return function(*args, **kwargs)
        except (Preempted, WorkerLost) as stop:
            log.warning("%s", stop)
            if _in_multirun():
                raise
            sys.exit(EXIT_PREEMPTED)
        except RetinaError as error:
            log.error("%s: %s", type(error).__name__, error)
            if _in_multirun():  # the job fails, the sweep goes on and records it
                raise
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


CONF_DIR = Path(__file__).parent / "conf"


def run_entry_point(main: Callable[[], object], argv: list[str] | None = None) -> None:
    """Runs a ``@hydra.main`` function after checking the ``group=option`` overrides of the
    command line: an option that does not exist ends the program with one line naming the
    group and its options (Hydra's own report is a multi-line block and exit status 1)."""
    problem = unknown_group_option(sys.argv[1:] if argv is None else argv)
    if problem:
        print(f"ConfigError: {problem}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    main()


def unknown_group_option(argv: list[str]) -> str | None:
    """Why a ``group=option`` override names no config file, or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    arguments = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
    except HydraException:
        return None  # Hydra reports malformed overrides itself
    for override in overrides:
        folder = CONF_DIR / override.key_or_group
        if override.is_delete() or "/" in override.key_or_group or not folder.is_dir():
            continue
        options = sorted(path.stem for path in folder.glob("*.yaml"))
        try:
            wanted = (
                list(override.sweep_string_iterator())
                if override.is_sweep_override()
                else [override.get_value_element_as_str()]
            )
        except HydraException:  # glob() sweeps need Hydra's config loader: let Hydra judge
            continue
        missing = [value for value in wanted if value not in options + ["null"]]
        if missing:
            return (
                f"{override.key_or_group}={missing[0]} is not an option of "
                f"{override.key_or_group}; choose one of {options}."
            )
    return None

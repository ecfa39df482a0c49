"""What every Hydra entry point shares: user errors end the program with a one-line
message and exit status 2 instead of a traceback; a preempted run exits with 75."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from retina.errors import EXIT_PREEMPTED, EXIT_USER_ERROR, Preempted, RetinaError, WorkerLost
from retina.logs import quiet_library_loggers, route_warnings_to_log, start_tensorflow_quietly


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

"""What every Hydra entry point shares: user errors end the program with a one-line
message and exit status 2 instead of a traceback; a preempted run exits with 75."""

from __future__ import annotations

import functools
import logging
import sys

from retina.errors import EXIT_PREEMPTED, EXIT_USER_ERROR, Preempted, RetinaError, WorkerLost
from retina.logs import quiet_library_loggers, route_warnings_to_log


def exit_on_user_error(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        quiet_library_loggers()
        route_warnings_to_log()
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

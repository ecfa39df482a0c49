"""SIGTERM/SIGINT handling: finish the current step, save, exit with ``EXIT_PREEMPTED``."""

from __future__ import annotations

import signal

# EX_TEMPFAIL from sysexits.h: "try again later". A job scheduler (or you) re-runs the
# same command and training resumes from the checkpoint saved on the way out.
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """Raised by the loop after it saved because a stop signal arrived."""

    def __init__(self, signal_name: str, step: int, checkpoint: str):
        super().__init__(
            f"{signal_name} received: saved {checkpoint} at step {step}; exiting with status "
            f"{EXIT_PREEMPTED}. Re-run the same command to resume."
        )


class StopSignal:
    """Context manager that turns SIGTERM/SIGINT into a flag the loop polls between steps."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, number, _frame) -> None:
        self.received = signal.Signals(number).name

    def __enter__(self) -> StopSignal:
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

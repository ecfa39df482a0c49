"""One training process per run directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from retina.errors import CheckpointError
from retina.run_dir import LOCK_FILE


class RunLock:
    """Refuses a second training process on the same run directory.

    ``flock`` on ``<run_dir>/.lock``: the kernel releases it when the owner dies, so a
    killed run never leaves a stale lock. The owner's pid is written for the message.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise CheckpointError(
                f"{self.path.parent} is in use by another training process (pid {owner}); "
                "wait for it to finish or stop it, or use another run directory."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

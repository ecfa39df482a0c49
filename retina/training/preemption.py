"""SIGTERM/SIGINT handling: finish the current step, save, exit with ``EXIT_PREEMPTED``.

One process: ``StopSignal`` turns the signal into a flag the loop polls. Several workers:
``ClusterStopSignal`` hands it to tf.distribute's ``PreemptionCheckpointHandler``, which
tells every worker, agrees on the step at which all of them save, and saves through the
checkpoint layer (the chief's copy is the checkpoint).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

from retina.errors import Preempted


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

    def poll(self) -> None:
        """Nothing to do here: the loop reads ``received`` itself."""


class ClusterStopSignal:
    """Multi-worker preemption: a SIGTERM on any worker makes all of them save at the same
    step and raise ``Preempted``.

    Args:
        strategy: the MultiWorkerMirroredStrategy in use.
        save: saves the current state through the checkpoint layer; returns its path.
        step: the current step, for the message.
    """

    received = None  # the loop's own checks never fire; ``poll`` does the work

    def __init__(self, strategy, save, step):
        import tensorflow as tf

        self._save, self._step, self._saved = save, step, None
        self._previous = signal.getsignal(signal.SIGTERM)
        # The handler insists on a checkpoint and a folder of its own: it restores from
        # there at start-up, and a non-chief makes a sibling folder beside it. It gets an
        # empty checkpoint, in a temporary folder removed on exit; our state is saved and
        # restored by the checkpoint layer.
        self._folder = tempfile.mkdtemp(prefix="retina-preemption-")
        config = tf.distribute.experimental.TerminationConfig(
            exit_fn=self._exit, save_fn=self._save_now
        )
        self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver,
            tf.train.Checkpoint(),
            os.path.join(self._folder, "handler"),
            config,
        )

    def _save_now(self) -> None:
        self._saved = self._save()

    def _exit(self) -> None:
        raise Preempted("SIGTERM", self._step(), str(self._saved))

    def poll(self) -> None:
        """Between compiled calls, on every worker: saves and raises ``Preempted`` once the
        workers agreed on this step."""
        self._handler.save_checkpoint_if_preempted()

    def __enter__(self) -> ClusterStopSignal:
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)
        shutil.rmtree(self._folder, ignore_errors=True)

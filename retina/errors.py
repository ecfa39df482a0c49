"""Errors a user can act on: each message says what was wrong, where, and what to do;
and the two ways a run stops early on purpose (preempted, a peer lost)."""

# EX_TEMPFAIL from sysexits.h: "try again later". A job scheduler (or you) re-runs the
# same command and training resumes from the checkpoint saved on the way out.
EXIT_PREEMPTED = 75
EXIT_USER_ERROR = 2


class RetinaError(Exception):
    """Base class for user and data errors; the entry points print these without a trace."""


class ConfigError(RetinaError):
    """A configuration value is missing, unknown or inconsistent."""


class DataError(RetinaError):
    """A data file or label table cannot be used as it is."""


class DicomError(DataError):
    """A DICOM file cannot be turned into an RGB image."""


class TrainingDiverged(RetinaError):
    """The loss or the weights became NaN or Inf; nothing non-finite was saved."""


class CheckpointError(RetinaError):
    """A checkpoint is missing, damaged, or does not match the model that reads it."""


class Preempted(Exception):
    """Raised by the loop after it saved because a stop signal arrived."""

    def __init__(self, signal_name: str, step: int, checkpoint: str):
        super().__init__(
            f"{signal_name} received: saved {checkpoint} at step {step}; exiting with status "
            f"{EXIT_PREEMPTED}. Re-run the same command to resume."
        )


class WorkerLost(Exception):
    """Raised when another worker of a multi-worker run stopped (killed, crashed, its host
    lost): this one cannot go on alone."""

    def __init__(self, reason: str, checkpoint: str):
        super().__init__(
            f"another worker stopped ({reason}); this one cannot go on without it. Exiting "
            f"with status {EXIT_PREEMPTED}: restart every worker with the same command to resume "
            f"from {checkpoint}."
        )

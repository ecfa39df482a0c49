"""Errors a user can act on: each message says what was wrong, where, and what to do."""


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

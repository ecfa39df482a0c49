"""When something periodic is due: a mid-epoch save, a TensorBoard write, an epoch start.

Training advances in compiled calls of several steps, so "is it time?" means "did a
multiple of ``every`` fall among the steps just done?".
"""


def is_due(step: int, every: int, steps_done: int = 1) -> bool:
    """Whether a multiple of ``every`` lies among the ``steps_done`` steps that ended at
    ``step`` (never when ``every`` is 0: off)."""
    return every > 0 and step % every < steps_done


def steps_until_due(step: int, every: int) -> int:
    """Steps from ``step`` to the next multiple of ``every`` (``every`` itself when on one)."""
    return every - step % every

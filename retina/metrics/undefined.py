"""Undefined metrics: each is ``nan`` with a reason, never an exception.

Outside an evaluation, ``undefined`` warns (RuntimeWarning) once per metric. Inside
``gathered()`` it records the metric, where it was computed (the ``where(...)`` blocks
around the call: level, operating point, subgroup) and why, so an evaluation on a small
set logs one line for all of them and keeps the reasons beside the NaNs in its output.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass

_place: ContextVar[tuple[str, ...]] = ContextVar("place", default=())
_gathering: ContextVar[list | None] = ContextVar("gathering", default=None)


@dataclass(frozen=True)
class Undefined:
    metric: str
    where: str
    reason: str


def undefined(name: str, why: str) -> float:
    """Reports that ``name`` is undefined (recorded inside ``gathered()``, else a warning
    pointing at the caller's caller) and returns nan."""
    found = _gathering.get()
    if found is None:
        warnings.warn(f"{name} is undefined: {why}; reporting nan.", RuntimeWarning, stacklevel=3)
    else:
        found.append(Undefined(name, " / ".join(_place.get()) or "overall", why))
    return float("nan")


@contextlib.contextmanager
def where(*place: str) -> Iterator[None]:
    """Names where the metrics computed inside the block belong (nested blocks add up)."""
    token = _place.set((*_place.get(), *place))
    try:
        yield
    finally:
        _place.reset(token)


@contextlib.contextmanager
def gathered() -> Iterator[list[Undefined]]:
    """Records every undefined metric inside the block in the list it yields, in order."""
    found: list[Undefined] = []
    token = _gathering.set(found)
    try:
        yield found
    finally:
        _gathering.reset(token)


def as_records(found: list[Undefined]) -> list[dict]:
    """``[{"metric", "where", "reason"}, ...]`` for a JSON file."""
    return [asdict(item) for item in found]


def one_line(found: list[Undefined]) -> str:
    """All of ``found`` in one line: each metric and reason once, with where it occurred
    (or how often, when in several places)."""
    places: dict[tuple[str, str], list[str]] = {}
    for item in found:
        places.setdefault((item.metric, item.reason), []).append(item.where)
    parts = [
        f"{metric}, {reason} ({where[0] if len(where) == 1 else f'{len(where)}x'})"
        for (metric, reason), where in places.items()
    ]
    return f"{len(found)} metrics undefined, reported as nan: " + "; ".join(parts)


def log_undefined(found: list[Undefined], logger: logging.Logger, what: str) -> None:
    """One warning line for all of ``found`` (none when it is empty)."""
    if found:
        logger.warning("%s: %s", what, one_line(found))

"""Numbers and tables as text: one way to print a metric, an interval and a Markdown table
(the evaluation report, the sweep summary and the checkpoint listing all use it).

Undefined values (``nan``, or ``None`` once read back from JSON) print as ``n/a``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from retina.icdr import BINARY_NAMES, GRADE_NAMES

LEVELS = {"eye_level": "Eye", "patient_level": "Patient"}
POINT_ORDER = ("default", "high_sensitivity", "high_specificity")


def as_float(value) -> float:
    """``value`` as a float; nan when it is not a number (None, text)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def format_number(value: float | None, digits: int = 3) -> str:
    """``0.953``, or ``n/a`` for an undefined value (nan, None, not a number)."""
    number = as_float(value)
    return f"{number:.{digits}f}" if math.isfinite(number) else "n/a"


def format_count(value) -> str:
    number = as_float(value)
    return str(int(number)) if math.isfinite(number) else "n/a"


def format_interval(estimate: Mapping | None) -> str:
    """``0.953 [0.921, 0.978]`` from ``{"value", "low", "high"}``; ``n/a`` if the value is
    undefined (an interval around nothing would only mislead)."""
    if not estimate or not math.isfinite(as_float(estimate.get("value"))):
        return "n/a"
    low, high = format_number(estimate.get("low")), format_number(estimate.get("high"))
    return f"{format_number(estimate['value'])} [{low}, {high}]"


def format_cell(value) -> str:
    """A table cell: floats to 3 decimals (``n/a`` when undefined), None empty, text with
    its pipes escaped so it cannot split the row."""
    if isinstance(value, float):
        return format_number(value)
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table; every cell goes through ``format_cell``."""
    lines = [list(header), ["---"] * len(header)]
    lines += [[format_cell(value) for value in row] for row in rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def ordered_points(points: Mapping) -> list[tuple[str, dict]]:
    """The operating points in reading order: default first, then the named ones."""
    rank = {name: index for index, name in enumerate(POINT_ORDER)}
    return sorted(points.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def class_names(size: int) -> list[str]:
    """Row and column names of a grade (or referable) table."""
    if size == len(GRADE_NAMES):
        return [f"{grade} {name}" for grade, name in enumerate(GRADE_NAMES)]
    if size == len(BINARY_NAMES):
        return list(BINARY_NAMES)
    return [str(index) for index in range(size)]

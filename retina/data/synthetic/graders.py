"""Three simulated graders and an adjudication panel reading each scan.

A reader sees the severity the photograph shows, ``visible = severity x (VISIBLE_FLOOR +
(1 - VISIBLE_FLOOR) x visibility)`` (haze, defocus and poor exposure hide small lesions, so
poor photographs are under-called by everyone, as in practice), adds their own bias and a
reading error, and rounds to the ICDR grade: ``grade = floor(visible + bias + error)``,
clipped to 0..4. The error's sd is larger below severity 2.5 (``BOUNDARY_FACTOR``): telling
a few microaneurysms from none, or mild from moderate, is where graders disagree most, so
most disagreements are one grade apart and sit at the 0/1 and 1/2 boundaries.

The adjudicated grade is the panel's consensus, read as one unbiased reading with a third
of a single grader's error (``PANEL``): close to, but not always, what the photograph shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from sklearn.metrics import cohen_kappa_score

from retina.icdr import NUM_GRADES

VISIBLE_FLOOR = 0.7
BOUNDARY_FACTOR = 1.8
BOUNDARY_BELOW = 2.5


@dataclass(frozen=True)
class Reader:
    name: str
    bias: float  # grades added to what the photograph shows
    error_sd: float  # sd of the reading error, in grades


GRADERS = (
    Reader("grader_1", -0.15, 0.45),  # cautious: calls a little low
    Reader("grader_2", 0.0, 0.6),
    Reader("grader_3", 0.2, 0.5),  # calls a little high
)
PANEL = Reader("adjudicated", 0.0, 0.2)
GRADE_COLUMNS = [reader.name for reader in (*GRADERS, PANEL)]


def visible_severity(severity: float, visibility: float) -> float:
    return severity * (VISIBLE_FLOOR + (1 - VISIBLE_FLOOR) * visibility)


def read_grade(rng: np.random.Generator, reader: Reader, visible: float) -> int:
    sd = reader.error_sd * (BOUNDARY_FACTOR if visible < BOUNDARY_BELOW else 1.0)
    return int(np.clip(np.floor(visible + reader.bias + rng.normal(0, sd)), 0, NUM_GRADES - 1))


def grade_scan(rng: np.random.Generator, severity: float, visibility: float) -> dict[str, int]:
    """Every grader's grade and the adjudicated one, by column name."""
    visible = visible_severity(severity, visibility)
    return {reader.name: read_grade(rng, reader, visible) for reader in (*GRADERS, PANEL)}


def mean_pairwise_kappa(grades: dict[str, np.ndarray]) -> float:
    """Mean quadratic weighted kappa over every pair of graders (the adjudicated grade aside)."""
    pairs = combinations([grades[reader.name] for reader in GRADERS], 2)
    return float(np.mean([cohen_kappa_score(a, b, weights="quadratic") for a, b in pairs]))

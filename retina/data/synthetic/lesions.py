"""Diabetic retinopathy lesions drawn for a severity on a continuum, with a mask per type.

``severity = grade + t``: the grade decides which lesion types appear (the ICDR rules:
grade 1 microaneurysms only; grade 2 also haemorrhages and exudates; grade 3 haemorrhages in
all four quadrants, venous beading, cotton-wool spots; grade 4 new vessels), and t in [0, 1)
how many, how large and how dark within the grade, so the borderline cases of real grading
exist: a grade-1 eye at t = 0.95 shows many microaneurysms and nothing else; a grade-2 eye
at t = 0.05 shows a single small, faint dot haemorrhage.

Sizes are fractions of the field-of-view radius r (about 6.5 mm on a 45-degree photograph):
microaneurysms 25-90 um across (radius 0.002-0.007 r), dot and blot haemorrhages of grade 2
150-450 um, the larger blots of grades 3-4 up to 600 um, hard exudates 80-200 um in
clusters: at 256 px most microaneurysms are smaller than a pixel, as on a downsampled real
photograph, and at the default 128 px input a faint single dot is barely one.
"""

from __future__ import annotations

import numpy as np
from skimage import draw

from retina.data.synthetic.geometry import (
    blend,
    random_points,
    stamp_path,
    thicken,
    vessel_path,
)

BLOOD = np.array([0.38, 0.04, 0.04], np.float32)
EXUDATE = np.array([0.98, 0.88, 0.42], np.float32)
COTTON_WOOL = np.array([0.92, 0.80, 0.66], np.float32)
LESION_TYPES = (
    "microaneurysm",
    "haemorrhage",
    "hard_exudate",
    "cotton_wool_spot",
    "neovascularisation",
)
MICROANEURYSM_RADIUS = (0.002, 0.007)
DOT_HAEMORRHAGE_RADIUS = (0.012, 0.035)
BLOT_HAEMORRHAGE_RADIUS = (0.018, 0.045)
EXUDATE_RADIUS = (0.006, 0.015)
COTTON_WOOL_RADIUS = (0.025, 0.045)


class LesionCanvas:
    """Per-type coverage (0..1) of everything drawn; what the masks are made from."""

    def __init__(self, shape: tuple[int, int]):
        self.coverage = {kind: np.zeros(shape, np.float32) for kind in LESION_TYPES}

    def add(self, kind: str, coverage: np.ndarray) -> None:
        np.maximum(self.coverage[kind], coverage, out=self.coverage[kind])

    def masks(self, threshold: float = 0.2) -> dict[str, np.ndarray]:
        """Where each type covers at least ``threshold`` of a pixel (a microaneurysm smaller
        than a pixel still marks the pixel it darkens)."""
        return {kind: cover >= threshold for kind, cover in self.coverage.items()}


def draw_lesions(
    image, rng, severity: float, centre, disc, r, canvas: LesionCanvas, scale: float = 1.0
) -> None:
    """Draws the lesions of ``severity``; ``scale`` multiplies every spot's radius (1: the
    sizes above; larger ones make lesions a small model at a small input can find)."""
    grade, t = int(severity), severity - int(severity)
    # Borderline lesions are faint: contrast grows with t in grades 1-2.
    strength = 0.55 + 0.4 * t if grade <= 2 else 0.95

    def spots(kind, points, radius, colour, spot_strength=strength):
        if not points:
            return
        coverage = _spots(image.shape[:2], points, radius, rng, r * scale)
        canvas.add(kind, coverage)
        blend(image, coverage * spot_strength, colour)

    def points(count, **where):
        return random_points(rng, int(round(count)), centre, r, disc, **where)

    microaneurysms = {0: 0, 1: 1 + 8 * t, 2: 5 + 10 * t, 3: rng.integers(10, 20)}
    spots(
        "microaneurysm",
        points(microaneurysms.get(grade, rng.integers(8, 20))),
        MICROANEURYSM_RADIUS,
        BLOOD,
    )
    if grade == 2:
        spots("haemorrhage", points(1 + 5 * t), DOT_HAEMORRHAGE_RADIUS, BLOOD)
    elif grade >= 3:
        # Severe NPDR's "4-2-1" rule starts with haemorrhages in all four quadrants.
        blots = [p for q in range(4) for p in points(rng.integers(2, 6), quadrant=q)]
        spots("haemorrhage", blots, BLOT_HAEMORRHAGE_RADIUS, BLOOD)
    clusters = {2: int(rng.random() < 0.2 + 0.6 * t) + int(t > 0.7)}.get(grade, 0)
    if grade >= 3:
        clusters = int(rng.integers(1, 4))
    for cluster_centre in points(clusters, max_rho=0.6):
        spread = r * rng.uniform(0.03, 0.08)
        members = [cluster_centre + rng.normal(0, spread, 2) for _ in range(rng.integers(4, 12))]
        spots("hard_exudate", members, EXUDATE_RADIUS, EXUDATE)
    wool = {2: int(rng.random() < 0.15 * t), 3: rng.integers(2, 6), 4: rng.integers(0, 3)}
    spots(
        "cotton_wool_spot",
        points(wool.get(grade, 0), max_rho=0.6),
        COTTON_WOOL_RADIUS,
        COTTON_WOOL,
        0.6,
    )
    if grade == 4:
        _draw_neovascularisation(image, rng, centre, disc, r, canvas)
        if rng.random() < 0.75:
            _draw_preretinal_haemorrhage(image, rng, centre, disc, r, canvas)


def _spots(shape, points, radius_range, rng, r) -> np.ndarray:
    """Anti-aliased ellipses (coverage 0..1), each stamped in a window of its own size: a
    spot smaller than a pixel leaves a faint single pixel, as on a real photograph."""
    coverage = np.zeros(shape, np.float32)
    for point in points:
        a = r * rng.uniform(*radius_range)
        b = a * rng.uniform(0.7, 1.3)
        angle = rng.uniform(0, np.pi)
        reach = int(np.ceil(max(a, b) + 2))
        y0, x0 = int(point[0]) - reach, int(point[1]) - reach
        rows = slice(max(y0, 0), min(y0 + 2 * reach + 1, shape[0]))
        cols = slice(max(x0, 0), min(x0 + 2 * reach + 1, shape[1]))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue  # wholly outside the image (a cluster member spread past its edge)
        dy, dx = np.mgrid[rows, cols].astype(np.float32)
        dy, dx = dy - point[0], dx - point[1]
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        spot = np.clip((1 - np.sqrt((u / a) ** 2 + (v / b) ** 2)) * min(a, b) + 0.5, 0, 1)
        np.maximum(coverage[rows, cols], spot, out=coverage[rows, cols])
    return coverage


def _draw_neovascularisation(image, rng, centre, disc, r, canvas: LesionCanvas) -> None:
    """Fine tortuous vessel tufts, at the disc (NVD) or elsewhere (NVE)."""
    widths = np.zeros(image.shape[:2], np.float32)
    sites = [disc] + random_points(rng, rng.integers(1, 3), centre, r, disc, max_rho=0.7)
    for site in sites:
        for _ in range(rng.integers(5, 9)):
            start = site + rng.normal(0, 0.03 * r, 2)
            loop = vessel_path(
                rng,
                start,
                rng.uniform(0, 2 * np.pi),
                rng.uniform(0.12, 0.25),
                rng.choice([-1, 1]) * rng.uniform(12, 20),
                r,
                step=0.012,
            )
            stamp_path(widths, loop, 0.009 * r)
    coverage = thicken(widths)
    canvas.add("neovascularisation", coverage / max(float(coverage.max()), 1e-6))
    blend(image, coverage, BLOOD * 1.3)


def _draw_preretinal_haemorrhage(image, rng, centre, disc, r, canvas: LesionCanvas) -> None:
    """A boat-shaped haemorrhage: a disk whose top is cut flat by the settled blood level."""
    at = random_points(rng, 1, centre, r, disc, max_rho=0.55)[0]
    radius = r * rng.uniform(0.08, 0.14)
    coverage = np.zeros(image.shape[:2], np.float32)
    rows, cols = draw.disk(tuple(at), radius, shape=coverage.shape)
    keep = rows > at[0] - 0.3 * radius
    coverage[rows[keep], cols[keep]] = 1.0
    canvas.add("haemorrhage", coverage)
    blend(image, coverage * 0.95, BLOOD * 0.8)

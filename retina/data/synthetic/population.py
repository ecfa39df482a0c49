"""Who is screened where: sites with their cameras and patient mix, patients with age, sex
and diabetes duration, and each eye's disease severity on a continuum.

Severity model. Each patient has a latent disease level
``z = site.referral_shift + DURATION_EFFECT * (years - 10) + N(0, 1)`` (longer diabetes, more
disease: the gradient of the Wisconsin and UKPDS cohorts), and each eye
``s = z + N(0, EYE_SPREAD)``, so the two eyes are correlated (severity r = 0.88 over 6,000
planned eyes) but not equal.
The ICDR grade is ``s`` cut at points chosen so that the in-domain sites together match
``grade_probs``; ``severity = grade + t`` places the eye within its grade (t in [0, 1)), so
a grade-1 eye at t = 0.95 is a borderline case next to a grade-2 eye at t = 0.05.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

DURATION_EFFECT = 0.08  # latent units per year of diabetes
EYE_SPREAD = 0.45  # latent sd of an eye around its patient's level
REFERENCE_PATIENTS = 50_000  # draws that place the grade cut points (seeded, fixed)
# Width (latent units) over which grade 0 and grade 4 run from t = 0 to 1.
OUTER_GRADE_WIDTH = 1.0


@dataclass(frozen=True)
class Camera:
    """What a site's fundus camera does to a photograph."""

    fov_radius: tuple[float, float]  # field-of-view radius / image height (> 0.5: clipped)
    resolution: float  # source height = data.synthetic.image_height x this
    colour_gain: tuple[float, float, float]  # RGB response
    jpeg_quality: tuple[int, int]  # the camera's own compression (0, 0: none)
    defocus: float  # typical defocus blur, in pixels per 160 px of field radius
    formats: tuple[tuple[str, float], ...]  # how its files are stored: (suffix, share)


@dataclass(frozen=True)
class Site:
    name: str
    description: str
    patient_share: float  # of the in-domain patients (the external site: of n_patients)
    camera: Camera
    age_mean: float
    duration_mean: float  # years of diabetes
    referral_shift: float  # latent disease added: a referral clinic sees sicker patients
    undilated: float  # share of eyes photographed without dilation (small pupils)
    external: bool = False


SITES = (
    Site(
        "A",
        "community screening programme, desktop 45-degree camera",
        0.45,
        Camera((0.46, 0.50), 1.0, (1.0, 1.0, 1.0), (88, 96), 0.35, (("jpg", 0.6), ("png", 0.4))),
        age_mean=57,
        duration_mean=8,
        referral_shift=-0.3,
        undilated=0.15,
    ),
    Site(
        "B",
        "hospital eye clinic, 50-degree camera writing DICOM",
        0.35,
        Camera((0.53, 0.58), 1.0, (1.06, 0.97, 0.9), (0, 0), 0.3, (("dcm", 0.7), ("png", 0.3))),
        age_mean=64,
        duration_mean=14,
        referral_shift=0.5,
        undilated=0.05,
    ),
    Site(
        "C",
        "mobile unit, handheld non-mydriatic camera",
        0.20,
        Camera((0.42, 0.46), 0.8, (0.95, 1.03, 1.02), (70, 85), 0.8, (("jpg", 1.0),)),
        age_mean=55,
        duration_mean=9,
        referral_shift=0.0,
        undilated=0.6,
    ),
    Site(
        "D",
        "partner hospital abroad (external set), another camera make",
        0.25,
        Camera((0.50, 0.54), 0.9, (0.86, 1.07, 1.14), (75, 90), 0.55, (("png", 0.5), ("jpg", 0.5))),
        age_mean=61,
        duration_mean=12,
        referral_shift=0.2,
        undilated=0.3,
        external=True,
    ),
)
SITE_BY_NAME = {site.name: site for site in SITES}


@dataclass(frozen=True)
class Patient:
    site: str
    age: int
    sex: str
    diabetes_years: int
    level: float  # latent disease level z


def draw_patients(rng: np.random.Generator, site: Site, count: int) -> list[Patient]:
    ages = np.clip(np.round(rng.normal(site.age_mean, 11, count)), 18, 90).astype(int)
    years = np.minimum(np.round(rng.gamma(2.0, site.duration_mean / 2, count)), ages - 5)
    levels = site.referral_shift + DURATION_EFFECT * (years - 10) + rng.normal(size=count)
    sexes = rng.choice(["F", "M"], count)
    return [
        Patient(site.name, int(age), str(sex), int(duration), float(level))
        for age, sex, duration, level in zip(ages, sexes, years, levels, strict=True)
    ]


def eye_levels(rng: np.random.Generator, patient_level: float | np.ndarray, eyes: int = 2):
    """The latent level of each eye: the patient's, plus the eye's own spread."""
    level = np.asarray(patient_level, float)[..., None]
    return level + rng.normal(0, EYE_SPREAD, (*level.shape[:-1], eyes))


def patients_per_site(n_patients: int) -> dict[str, int]:
    """In-domain patients shared out by ``patient_share``; the external site's own count."""
    in_domain = [site for site in SITES if not site.external]
    shares = np.array([site.patient_share for site in in_domain])
    counts = np.floor(n_patients * shares / shares.sum()).astype(int)
    counts[0] += n_patients - counts.sum()
    found = {site.name: int(count) for site, count in zip(in_domain, counts, strict=True)}
    for site in SITES:
        if site.external:
            found[site.name] = round(n_patients * site.patient_share)
    return found


@functools.lru_cache
def grade_cut_points(grade_probs: tuple[float, ...]) -> np.ndarray:
    """The four latent levels separating grades 0..4, so that eyes of the in-domain sites
    fall into the grades in ``grade_probs`` proportions (from a fixed reference draw)."""
    rng = np.random.default_rng(20_260_101)
    levels = [
        eye_levels(rng, [p.level for p in draw_patients(rng, SITE_BY_NAME[name], count)])
        for name, count in patients_per_site(REFERENCE_PATIENTS).items()
        if not SITE_BY_NAME[name].external
    ]
    probs = np.asarray(grade_probs, float) / np.sum(grade_probs)
    return np.quantile(np.concatenate(levels).ravel(), np.cumsum(probs)[:-1])


def severity_from_level(level: float, cut_points: np.ndarray) -> float:
    """grade + t: the grade the level falls in and its position t within the grade."""
    grade = int(np.searchsorted(cut_points, level))
    if grade == 0:
        low, high = cut_points[0] - OUTER_GRADE_WIDTH, cut_points[0]
    elif grade == len(cut_points):
        low, high = cut_points[-1], cut_points[-1] + OUTER_GRADE_WIDTH
    else:
        low, high = cut_points[grade - 1], cut_points[grade]
    return grade + float(np.clip((level - low) / (high - low), 0.0, 0.999))

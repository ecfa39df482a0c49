"""How good each photograph is: the defects a screening programme meets, drawn per scan
from the patient and the site, and the share too poor to grade.

Defects (each its own parameter; drawn in ``draw_quality``, applied in ``render``):
    haze       cataract-like veil and blur; its chance grows with age
               (``HAZE_BASE + HAZE_PER_YEAR x (age - 50)``), its strength U(0.15, 0.75).
    defocus    blur of ``camera.defocus`` x lognormal(0, DEFOCUS_SPREAD) px per 160 px of
               field radius.
    exposure   gain exp(N(0, EXPOSURE_SD)): under- and over-exposed photographs.
    pupil      small pupils (undilated eyes, more often at some sites and in older
               patients) darken the periphery: strength U(0.35, 0.85).
    eyelash    dark blurred lashes across the top or bottom edge (``EYELASH_SHARE``).
    rim        a bright crescent at the field's edge from misalignment (``RIM_SHARE``).

Visibility, the share of a small lesion's contrast the photograph keeps, multiplies one
factor per defect; a photograph is ungradable below ``UNGRADABLE_BELOW`` (5-10% of the
in-domain scans, the share EyePACS and Messidor-2 report ungradable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retina.data.synthetic.population import Camera, Patient

HAZE_BASE, HAZE_PER_YEAR = 0.04, 0.008
DEFOCUS_SPREAD = 0.5
EXPOSURE_SD = 0.2
EYELASH_SHARE = 0.07
RIM_SHARE = 0.07
UNGRADABLE_BELOW = 0.35


@dataclass(frozen=True)
class Quality:
    haze: float = 0.0  # 0: clear media
    defocus: float = 0.0  # blur sd in px per 160 px of field radius
    exposure: float = 1.0  # gain
    pupil: float = 0.0  # 0: dilated
    eyelash: bool = False
    rim: bool = False

    @property
    def visibility(self) -> float:
        """Share of a small lesion's contrast the photograph keeps, 0..1."""
        factors = (
            1 - self.haze,
            1 / (1 + (self.defocus / 2.5) ** 2),
            np.exp(-((np.log(self.exposure) / 0.5) ** 2)),
            1 - 0.5 * self.pupil,
            0.85 if self.eyelash else 1.0,
            0.92 if self.rim else 1.0,
        )
        return float(np.prod(factors))

    @property
    def gradable(self) -> bool:
        return self.visibility >= UNGRADABLE_BELOW


def draw_quality(rng: np.random.Generator, patient: Patient, camera: Camera, undilated: float):
    haze_chance = np.clip(HAZE_BASE + HAZE_PER_YEAR * (patient.age - 50), 0.02, 0.6)
    small_pupil = rng.random() < undilated + 0.004 * max(0, patient.age - 60)
    return Quality(
        haze=float(rng.uniform(0.15, 0.75)) if rng.random() < haze_chance else 0.0,
        defocus=float(camera.defocus * rng.lognormal(0, DEFOCUS_SPREAD)),
        exposure=float(np.exp(rng.normal(0, EXPOSURE_SD))),
        pupil=float(rng.uniform(0.35, 0.85)) if small_pupil else 0.0,
        eyelash=bool(rng.random() < EYELASH_SHARE),
        rim=bool(rng.random() < RIM_SHARE),
    )

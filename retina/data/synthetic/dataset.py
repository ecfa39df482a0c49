"""The built-in synthetic set on disk: patients and their scans planned from a seed, drawn in
parallel, written in the APTOS 2019 layout (``train.csv`` + ``train_images/``) with the
graders' readings and patient facts as extra columns, the generator's own truth in
``truth.csv`` and lesion masks in ``lesion_masks/`` (never among the scans)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from retina.config import SyntheticConfig
from retina.data.parallel import run_parallel
from retina.data.synthetic.dicom_writer import write_ophthalmic_dicom
from retina.data.synthetic.graders import GRADE_COLUMNS, grade_scan, mean_pairwise_kappa
from retina.data.synthetic.lesions import LesionCanvas
from retina.data.synthetic.population import (
    SITE_BY_NAME,
    Patient,
    draw_patients,
    eye_levels,
    grade_cut_points,
    patients_per_site,
    severity_from_level,
)
from retina.data.synthetic.quality import Quality, draw_quality
from retina.data.synthetic.render import render_fundus
from retina.files import write_atomically

log = logging.getLogger(__name__)

SPEC_FILE = "synthetic.json"
LABELS_FILE = "train.csv"
IMAGES_DIR = "train_images"

_GIVEN = [
    "Amara",
    "Bjorn",
    "Chiara",
    "Dmitri",
    "Esperanza",
    "Farouk",
    "Greta",
    "Hiroshi",
    "Ingrid",
    "Jovan",
    "Kalani",
    "Leopold",
    "Marisol",
    "Nikolai",
    "Oluwaseun",
    "Priya",
]
_FAMILY = [
    "Okonkwo",
    "Vasquez",
    "Lindqvist",
    "Tanaka",
    "Abernathy",
    "Kowalczyk",
    "Moreau",
    "Haddad",
    "Fitzgerald",
    "Nakamura",
    "Oyelaran",
    "Petrovic",
    "Quintero",
    "Rasmussen",
]


GENERATOR_VERSION = 2  # bumped when the same spec draws different files
TRUTH_FILE = "truth.csv"
MASKS_DIR = "lesion_masks"


@dataclass(frozen=True)
class _Scan:
    id_code: str
    patient_id: str
    patient_name: str
    eye: str  # "R" or "L"
    severity: float  # grade + t, see retina.data.synthetic.lesions
    patient: Patient
    quality: Quality
    grades: dict  # grader_1..3 and adjudicated
    fmt: str  # "png", "jpg" or "dcm"
    seed: int


def ensure_synthetic_dataset(
    root: str | Path, spec: SyntheticConfig, workers: int = 0, sites: list[str] | None = None
) -> Path:
    """Generates the data set under ``root`` unless the same spec is already there.

    Sites are written as they are first asked for (the external site only when something
    reads it): each scan is drawn from its own planned seed, so a site written later gives
    the same files as one written at once.

    Args:
        root: folder that receives ``train.csv``, ``train_images/``, ``truth.csv``,
            ``lesion_masks/`` and ``synthetic.json``.
        spec: what to generate.
        workers: processes to use; 0 means one per core.
        sites: the sites needed (None or empty: all).

    Returns:
        The root folder.
    """
    root = Path(root)
    spec_path = root / SPEC_FILE
    wanted = json.loads(json.dumps({**_spec_record(spec), "generator": GENERATOR_VERSION}))
    record = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    written = set(record.get("sites_written", [])) if record.get("spec") == wanted else set()
    needed = set(sites or SITE_BY_NAME)
    if needed <= written:
        return root
    if not written:  # a new spec: nothing of an older set is kept
        for folder in (IMAGES_DIR, MASKS_DIR):
            shutil.rmtree(root / folder, ignore_errors=True)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    planned = _plan_scans(spec)
    scans = [scan for scan in planned if scan.patient.site in needed - written]
    log.info("Generating %d synthetic fundus scans into %s", len(scans), root)
    run_parallel(_write_scan, [(scan, spec, root) for scan in scans], workers, "synthetic scans")
    written |= needed
    kept = [scan for scan in planned if scan.patient.site in written]
    labels = _labels_table(kept)
    write_atomically(root / LABELS_FILE, lambda path: labels.to_csv(path, index=False))
    truth = pd.DataFrame(
        {
            "id_code": [s.id_code for s in kept],
            "severity": [round(s.severity, 4) for s in kept],
            "visibility": [round(s.quality.visibility, 4) for s in kept],
        }
    )
    write_atomically(root / TRUTH_FILE, lambda path: truth.to_csv(path, index=False))
    facts = _facts(_labels_table(planned))  # of the whole planned set, whatever is written
    log.info(
        "Graders: mean pairwise quadratic kappa %.3f; %.1f%% of scans ungradable.",
        facts["grader_kappa"],
        100 * facts["ungradable_share"],
    )
    # Written last: what it lists is complete.
    record = {"spec": wanted, "sites_written": sorted(written), **facts}
    write_atomically(spec_path, json.dumps(record, indent=2))
    return root


def _spec_record(spec: SyntheticConfig) -> dict:
    """The spec as recorded; a default ``lesion_scale`` is left out, so that sets written
    before it existed are still recognised."""
    record = asdict(spec)
    if record["lesion_scale"] == 1.0:
        del record["lesion_scale"]
    return record


def _labels_table(scans: list[_Scan]) -> pd.DataFrame:
    """train.csv: APTOS's id_code and diagnosis (the adjudicated grade), then the patient,
    the site, every grader's grade and whether the graders could grade the photograph."""
    return pd.DataFrame(
        {
            "id_code": [s.id_code for s in scans],
            "diagnosis": [s.grades["adjudicated"] for s in scans],
            "patient_id": [s.patient_id for s in scans],
            "eye": [s.eye for s in scans],
            "site": [s.patient.site for s in scans],
            "age": [s.patient.age for s in scans],
            "sex": [s.patient.sex for s in scans],
            "diabetes_years": [s.patient.diabetes_years for s in scans],
            "gradable": [int(s.quality.gradable) for s in scans],
            **{column: [s.grades[column] for s in scans] for column in GRADE_COLUMNS},
        }
    )


def _facts(labels: pd.DataFrame) -> dict:
    gradable = labels[labels["gradable"] == 1]
    return {
        "scans": len(labels),
        "ungradable_share": round(1 - len(gradable) / len(labels), 4),
        "grader_kappa": round(mean_pairwise_kappa(gradable), 4),
        "scans_per_site": labels["site"].value_counts().sort_index().to_dict(),
    }


def _plan_scans(spec: SyntheticConfig) -> list[_Scan]:
    """Draws patients site by site, their eyes' severities and photograph quality, the
    graders' readings, file formats and per-scan seeds."""
    rng = np.random.default_rng(spec.seed)
    cut_points = grade_cut_points(tuple(spec.grade_probs))
    scans = []
    for site_name, count in patients_per_site(spec.n_patients).items():
        site = SITE_BY_NAME[site_name]
        for patient in draw_patients(rng, site, count):
            patient_id = f"SYN{rng.integers(10**7):07d}"
            name = f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}"
            for eye, level in zip(("R", "L"), eye_levels(rng, patient.level), strict=True):
                severity = severity_from_level(float(level), cut_points)
                quality = draw_quality(rng, patient, site.camera, site.undilated)
                formats, shares = zip(*site.camera.formats, strict=True)
                scans.append(
                    _Scan(
                        id_code=rng.bytes(6).hex(),
                        patient_id=patient_id,
                        patient_name=name,
                        eye=eye,
                        severity=severity,
                        patient=patient,
                        quality=quality,
                        grades=grade_scan(rng, severity, quality.visibility),
                        fmt=str(rng.choice(formats, p=shares)),
                        seed=int(rng.integers(2**31)),
                    )
                )
    return scans


def _write_scan(job: tuple[_Scan, SyntheticConfig, Path]) -> None:
    scan, spec, root = job
    site = SITE_BY_NAME[scan.patient.site]
    rng = np.random.default_rng(scan.seed)
    height = int(round(spec.image_height * site.camera.resolution))
    canvas = LesionCanvas((height, int(round(height * 1.2))))
    image = render_fundus(
        rng,
        scan.severity,
        scan.eye,
        height,
        site_camera=site.camera,
        quality=scan.quality,
        canvas=canvas,
        lesion_scale=spec.lesion_scale,
    )
    path = root / IMAGES_DIR / f"{scan.id_code}.{scan.fmt}"
    if scan.fmt == "dcm":
        write_ophthalmic_dicom(
            path,
            image,
            scan.eye,
            scan.patient_id,
            scan.patient_name,
            uid_seed=f"{scan.seed}-{scan.id_code}",
        )
    elif scan.fmt == "jpg":
        Image.fromarray(image).save(path, quality=int(rng.integers(85, 96)))
    else:
        Image.fromarray(image).save(path, compress_level=1)  # fast; the pixels are the same
    if spec.lesion_masks:
        write_lesion_masks(root / MASKS_DIR, scan.id_code, canvas.masks())


def write_lesion_masks(folder: Path, id_code: str, masks: dict[str, np.ndarray]) -> None:
    """``<folder>/<lesion type>/<id_code>.png`` (0 or 255) for every type drawn; a type with
    no lesion in the scan has no file (IDRiD's layout)."""
    for kind, mask in masks.items():
        if mask.any():
            (folder / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask * 255).astype(np.uint8)).save(folder / kind / f"{id_code}.png")

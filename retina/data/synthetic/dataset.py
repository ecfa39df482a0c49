"""The built-in synthetic set on disk: patients and their scans planned from a seed, drawn in
parallel, written in the APTOS 2019 layout (``train.csv`` + ``train_images/``)."""

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
from retina.data.synthetic.dicom_writer import write_ophthalmic_dicom
from retina.data.synthetic.render import render_fundus
from retina.files import write_atomically
from retina.parallel import run_parallel

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


@dataclass(frozen=True)
class _Scan:
    id_code: str
    patient_id: str
    patient_name: str
    eye: str  # "R" or "L"
    grade: int
    fmt: str  # "png", "jpg" or "dcm"
    seed: int


def ensure_synthetic_dataset(root: str | Path, spec: SyntheticConfig, workers: int = 0) -> Path:
    """Generates the data set under ``root`` unless the same spec is already there.

    Args:
        root: folder that receives ``train.csv``, ``train_images/`` and ``synthetic.json``.
        spec: what to generate.
        workers: processes to use; 0 means one per core.

    Returns:
        The root folder.
    """
    root = Path(root)
    spec_path = root / SPEC_FILE
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if spec_path.exists() and spec_path.read_text() == wanted:
        return root
    if root.exists():
        shutil.rmtree(root / IMAGES_DIR, ignore_errors=True)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    scans = _plan_scans(spec)
    log.info("Generating %d synthetic fundus scans into %s", len(scans), root)
    jobs = [(scan, spec.image_height, root / IMAGES_DIR) for scan in scans]
    run_parallel(_write_scan, jobs, workers, "synthetic scans")
    labels = pd.DataFrame(
        {
            "id_code": [s.id_code for s in scans],
            "diagnosis": [s.grade for s in scans],
            "patient_id": [s.patient_id for s in scans],
            "eye": [s.eye for s in scans],
        }
    )
    write_atomically(root / LABELS_FILE, lambda path: labels.to_csv(path, index=False))
    write_atomically(spec_path, wanted)  # written last: its presence means the set is complete
    return root


def _plan_scans(spec: SyntheticConfig) -> list[_Scan]:
    """Draws patients, their two eyes' grades, file formats and per-scan seeds."""
    rng = np.random.default_rng(spec.seed)
    probs = np.asarray(spec.grade_probs, float) / np.sum(spec.grade_probs)
    scans = []
    patient_ids = rng.choice(10**7, size=spec.n_patients, replace=False)
    for patient_number in patient_ids:
        patient_id = f"SYN{patient_number:07d}"
        name = f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}"
        base_grade = int(rng.choice(5, p=probs))
        for eye in ("R", "L"):
            # The fellow eye is usually graded the same, sometimes one grade apart.
            shift = 0 if rng.random() < 0.7 else int(rng.choice([-1, 1]))
            grade = int(np.clip(base_grade + shift, 0, 4))
            u = rng.random()
            fmt = (
                "dcm"
                if u < spec.dicom_fraction
                else ("jpg" if u < spec.dicom_fraction + spec.jpeg_fraction else "png")
            )
            id_code = rng.bytes(6).hex()
            scans.append(
                _Scan(id_code, patient_id, name, eye, grade, fmt, int(rng.integers(2**31)))
            )
    return scans


def _write_scan(job: tuple[_Scan, int, Path]) -> None:
    scan, height, folder = job
    rng = np.random.default_rng(scan.seed)
    image = render_fundus(rng, scan.grade, scan.eye, height)
    path = folder / f"{scan.id_code}.{scan.fmt}"
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
        Image.fromarray(image).save(path, quality=int(rng.integers(80, 96)))
    else:
        Image.fromarray(image).save(path)

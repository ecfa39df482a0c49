import hashlib

import numpy as np
import pandas as pd
import pydicom
import pytest

from retina.config import SyntheticConfig
from retina.data.synthetic import ensure_synthetic_dataset, render_fundus

SPEC = SyntheticConfig(
    n_patients=10, image_height=96, seed=3, jpeg_fraction=0.3, dicom_fraction=0.3
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("syn") / "set", SPEC, workers=1)


def _digest(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((folder / "train_images").iterdir())
    }


def test_aptos_layout_with_two_eyes_per_patient(dataset):
    labels = pd.read_csv(dataset / "train.csv", dtype=str)
    assert list(labels.columns) == ["id_code", "diagnosis", "patient_id", "eye"]
    eyes = labels.groupby("patient_id")["eye"].apply(lambda e: "".join(sorted(e)))
    assert len(labels) == 20 and (eyes == "LR").all()
    suffixes = {p.suffix for p in (dataset / "train_images").iterdir()}
    assert suffixes == {".png", ".jpg", ".dcm"}


def test_same_seed_same_files(dataset, tmp_path):
    again = ensure_synthetic_dataset(tmp_path / "again", SPEC, workers=1)
    assert _digest(again) == _digest(dataset)


def test_dicom_is_ophthalmic_photography_with_fake_identifiers(dataset):
    labels = pd.read_csv(dataset / "train.csv", dtype=str).set_index("id_code")
    for path in (dataset / "train_images").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.5.1" and ds.Modality == "OP"
        assert ds.PatientID == labels.loc[path.stem, "patient_id"]
        assert ds.ImageLaterality == labels.loc[path.stem, "eye"]
        assert ds.pixel_array.shape == (96, 115, 3)


@pytest.mark.parametrize("eye", ["R", "L"])
def test_looks_like_a_fundus_photograph(eye):
    image = render_fundus(np.random.default_rng(1), 0, eye, 160).astype(float)
    height, width = image.shape[:2]
    assert image[:8, :8].max() < 15, "black surround outside the field of view"
    centre = image[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3]
    red, green, blue = centre.reshape(-1, 3).mean(0)
    assert red > green > blue and red > 100, "orange-red retina"
    # The optic disc is the brightest spot, on the image's right for a right eye.
    brightness = image.sum(2)
    brightest_col = np.unravel_index(brightness.argmax(), brightness.shape)[1]
    assert (brightest_col > width / 2) == (eye == "R")


def test_lesions_grow_with_grade():
    """Dark-red lesion pixels (the signal a model learns) increase from grade 0 to 4."""

    def lesion_pixels(grade):
        counts = []
        for seed in range(6):
            image = render_fundus(np.random.default_rng(seed), grade, "R", 160, camera=False)
            background = render_fundus(np.random.default_rng(seed), 0, "R", 160, camera=False)
            image, background = image.astype(int), background.astype(int)
            counts.append((np.abs(image - background).sum(2) > 60).sum())
        return np.mean(counts)

    counts = [lesion_pixels(g) for g in range(5)]
    assert counts[0] == 0
    assert counts[1] < counts[2] < counts[3], counts
    assert counts[4] > counts[1]

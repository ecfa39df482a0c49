"""The built-in synthetic screening programme: files, determinism, the documented mechanisms
(graders, quality, sites, patients), lesion masks, and how the readers use its columns."""

import dataclasses
import hashlib

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from scipy import ndimage, stats

from conftest import compose_config
from retina.config import PreprocessConfig, SyntheticConfig
from retina.data.fundus import mask_in_preprocessed_frame, preprocess_fundus
from retina.data.sources import build_manifest
from retina.data.synthetic import ensure_synthetic_dataset, render_fundus
from retina.data.synthetic.dataset import _plan_scans
from retina.data.synthetic.graders import GRADERS, mean_pairwise_kappa
from retina.data.synthetic.lesions import LESION_TYPES, LesionCanvas
from retina.data.synthetic.population import SITE_BY_NAME
from retina.data.synthetic.quality import Quality

SPEC = SyntheticConfig(n_patients=10, image_height=96, seed=3)
COLUMNS = [
    "id_code",
    "diagnosis",
    "patient_id",
    "eye",
    "site",
    "age",
    "sex",
    "diabetes_years",
    "gradable",
    "grader_1",
    "grader_2",
    "grader_3",
    "adjudicated",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("syn") / "set", SPEC, workers=1)


@pytest.fixture(scope="module")
def planned():
    """A large set planned (not drawn): every label, patient and quality fact."""
    scans = _plan_scans(dataclasses.replace(SPEC, n_patients=3000))
    table = pd.DataFrame(
        {
            "site": s.patient.site,
            "age": s.patient.age,
            "years": s.patient.diabetes_years,
            "patient": s.patient_id,
            "eye": s.eye,
            "severity": s.severity,
            "visibility": s.quality.visibility,
            "haze": s.quality.haze,
            "gradable": s.quality.gradable,
            **s.grades,
        }
        for s in scans
    )
    return table


def _digest(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_aptos_layout_with_graders_sites_and_patients(dataset):
    labels = pd.read_csv(dataset / "train.csv", dtype=str)
    assert list(labels.columns) == COLUMNS
    assert (labels["diagnosis"] == labels["adjudicated"]).all()
    eyes = labels.groupby("patient_id")["eye"].apply(lambda e: "".join(sorted(e)))
    assert (eyes == "LR").all()
    assert set(labels["site"]) == {"A", "B", "C", "D"}
    assert len(labels) == 2 * (10 + round(10 * SITE_BY_NAME["D"].patient_share))
    suffixes = {p.suffix for p in (dataset / "train_images").iterdir()}
    assert suffixes == {".png", ".jpg", ".dcm"}
    # Masks live in a folder of their own, never among the scans.
    assert not list((dataset / "train_images").glob("*/"))
    assert {p.name for p in (dataset / "lesion_masks").iterdir()} <= set(LESION_TYPES)


def test_same_seed_same_files(dataset, tmp_path):
    again = ensure_synthetic_dataset(tmp_path / "again", SPEC, workers=1)
    assert _digest(again) == _digest(dataset)


def test_a_site_written_later_gives_the_same_files(dataset, tmp_path):
    """The default run writes sites A-C only; the external site follows when first read."""
    root = ensure_synthetic_dataset(tmp_path / "lazy", SPEC, workers=1, sites=["A", "B", "C"])
    assert "D" not in set(pd.read_csv(root / "train.csv", dtype=str)["site"])
    ensure_synthetic_dataset(root, SPEC, workers=1, sites=["D"])
    assert _digest(root) == _digest(dataset)


def test_dicom_is_ophthalmic_photography_with_fake_identifiers(dataset):
    labels = pd.read_csv(dataset / "train.csv", dtype=str).set_index("id_code")
    for path in (dataset / "train_images").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.5.1" and ds.Modality == "OP"
        assert ds.PatientID == labels.loc[path.stem, "patient_id"]
        assert ds.ImageLaterality == labels.loc[path.stem, "eye"]
        assert labels.loc[path.stem, "site"] == "B"  # the hospital's camera writes DICOM
        assert ds.pixel_array.shape == (96, 115, 3)


def test_graders_disagree_as_documented(planned):
    gradable = planned[planned["gradable"] & (planned["site"] != "D")]
    kappa = mean_pairwise_kappa(gradable)
    assert 0.60 <= kappa <= 0.85, kappa
    first, second = gradable["grader_1"], gradable["grader_2"]
    apart = (first - second).abs()
    assert 0.7 < (apart == 1).sum() / (apart > 0).sum()  # mostly adjacent grades
    # Near a grade boundary, graders disagree more at 0/1 and 1/2 than at 2/3 and 3/4.
    boundary = gradable["severity"].round()
    near = (gradable["severity"] - boundary).abs() < 0.15
    low = near & boundary.isin([1, 2])
    high = near & boundary.isin([3, 4])
    assert (apart[low] > 0).mean() > (apart[high] > 0).mean() + 0.05
    # Each grader's own bias shows in their mean grade.
    means = [gradable[g.name].mean() for g in GRADERS]
    assert means[0] < means[1] < means[2]
    # The adjudicated grade is closer to the truth than any single grader.
    truth = np.floor(gradable["severity"])
    errors = {
        c: (gradable[c] - truth).abs().mean() for c in ("adjudicated", *(g.name for g in GRADERS))
    }
    assert errors["adjudicated"] < min(errors[g.name] for g in GRADERS)


def test_quality_patients_and_sites_follow_their_parameters(planned):
    in_domain = planned[planned["site"] != "D"]
    assert 0.05 <= 1 - in_domain["gradable"].mean() <= 0.10
    # Older patients: more haze; longer diabetes: more disease.
    assert stats.spearmanr(planned["age"], planned["haze"] > 0).statistic > 0.1
    assert stats.spearmanr(planned["years"], planned["severity"]).statistic > 0.2
    # Both eyes of a patient correlate, without being equal.
    eyes = planned.pivot_table(index="patient", columns="eye", values="severity")
    correlation = eyes["L"].corr(eyes["R"])
    assert 0.6 < correlation < 0.95, correlation
    # The referral clinic (B) sees more referable disease than the community programme (A).
    referable = planned.groupby("site")["adjudicated"].apply(lambda g: (g >= 2).mean())
    assert referable["B"] > referable["A"] + 0.15
    # The handheld camera without dilation (C) takes the most ungradable photographs.
    ungradable = 1 - planned.groupby("site")["gradable"].mean()
    assert ungradable["C"] == ungradable.max()


def test_lesion_masks_cover_the_drawn_lesions():
    """Pixels a lesion changed lie inside its mask (grade 2: no venous beading, which has no
    mask), and mask pixels show their lesion (every grade)."""
    for seed, severity in [(0, 2.9), (1, 3.6), (2, 4.5), (3, 2.5)]:
        canvas = LesionCanvas((200, 240))
        image = render_fundus(
            np.random.default_rng(seed), severity, "R", 200, camera=False, canvas=canvas
        )
        clean = render_fundus(np.random.default_rng(seed), 0.0, "R", 200, camera=False)
        changed = np.abs(image.astype(int) - clean.astype(int)).sum(axis=2)
        masks = canvas.masks()
        union = ndimage.binary_dilation(np.any(list(masks.values()), axis=0), iterations=1)
        if severity < 3:
            assert (changed[~union] < 60).all()  # a clearly visible change
        assert (changed > 40).sum() > 50
        for kind in ("haemorrhage", "hard_exudate", "cotton_wool_spot", "neovascularisation"):
            if masks[kind].any():
                assert np.mean(changed[masks[kind]] > 20) > 0.8, kind


def test_a_mask_maps_onto_the_preprocessed_image():
    """Haemorrhage pixels, mapped into the cropped and resized frame, are where the
    preprocessed image is locally dark."""
    cfg = PreprocessConfig(image_size=128)
    canvas = LesionCanvas((256, 307))
    rng = np.random.default_rng(5)
    camera = SITE_BY_NAME["B"].camera  # a field clipped top and bottom: the crop is not trivial
    photo = render_fundus(rng, 3.8, "L", 256, site_camera=camera, quality=Quality(), canvas=canvas)
    mapped = mask_in_preprocessed_frame(canvas.masks()["haemorrhage"], photo, cfg)
    green = preprocess_fundus(photo, cfg)[..., 1].astype(float)
    contrast = green - ndimage.median_filter(green, 9)
    inside, outside = contrast[mapped > 0.5], contrast[mapped < 0.01]
    assert inside.size > 20
    assert inside.mean() < outside.mean() - 8, (inside.mean(), outside.mean())
    shifted = np.roll(mapped, 10, axis=1)  # the same mask 10 px off: no longer on the lesions
    assert contrast[shifted > 0.5].mean() > inside.mean() + 5


def test_the_reader_keeps_gradable_in_domain_scans_and_their_facts(dataset):
    data = compose_config("train", [f"data.root={dataset}"]).data
    cfg = dataclasses.replace(_to_object(data), root=str(dataset))
    manifest, _ = build_manifest(cfg)
    labels = pd.read_csv(dataset / "train.csv", dtype=str)
    kept = labels[(labels["site"] != "D") & (labels["gradable"] == "1")]
    assert len(manifest) == len(kept)
    assert {"site", "age", "sex", "diabetes_years"} <= set(manifest.columns)
    assert "train_grade" not in manifest  # training learns the adjudicated grade
    assert not set(labels["patient_id"]) & set(manifest.astype(str).stack())

    by_grader = build_manifest(dataclasses.replace(cfg, train_label="grader_2"))[0]
    assert (by_grader["split"] == manifest["split"]).all()  # the split does not move
    graded = kept.set_index("id_code")["grader_2"].astype(int)
    assert (by_grader["train_grade"].to_numpy() == graded[by_grader["scan_id"]].to_numpy()).all()

    external = _to_object(compose_config("evaluate", ["run_dir=x", "data=synthetic_external"]).data)
    held_out = build_manifest(dataclasses.replace(external, root=str(dataset)))[0]
    assert set(held_out["site"]) == {"D"} and set(held_out["split"]) == {"test"}


def _to_object(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_object(node)


def test_spots_past_any_edge_of_the_image_are_skipped():
    """A hard-exudate cluster member can spread past the image (seed 3 with 1,600
    patients drew one past the far edge, and the generator crashed)."""
    from retina.data.synthetic.lesions import _spots

    rng = np.random.default_rng(0)
    outside = [np.array([90.0, 20.0]), np.array([20.0, 95.0]), np.array([-30.0, 20.0])]
    coverage = _spots((64, 64), outside, (0.02, 0.04), rng, 100)
    assert not coverage.any()
    straddling = _spots((64, 64), [np.array([63.0, 20.0])], (0.02, 0.04), rng, 100)
    assert straddling[60:, 15:25].any()


def test_lesions_grow_with_severity():
    """Dark-red and yellow lesion pixels (the signal a model learns) increase with severity."""

    def lesion_pixels(severity):
        counts = []
        for seed in range(6):
            image = render_fundus(np.random.default_rng(seed), severity, "R", 160, camera=False)
            background = render_fundus(np.random.default_rng(seed), 0.0, "R", 160, camera=False)
            image, background = image.astype(int), background.astype(int)
            counts.append((np.abs(image - background).sum(2) > 60).sum())
        return np.mean(counts)

    counts = [lesion_pixels(s) for s in (0.0, 1.5, 2.1, 2.9, 3.5)]
    assert counts[0] == 0
    assert counts[1] <= counts[2] < counts[3] < counts[4], counts


@pytest.mark.parametrize("eye", ["R", "L"])
def test_looks_like_a_fundus_photograph(eye):
    image = render_fundus(np.random.default_rng(1), 0.0, eye, 160).astype(float)
    height, width = image.shape[:2]
    assert image[:8, :8].max() < 15, "black surround outside the field of view"
    centre = image[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3]
    red, green, blue = centre.reshape(-1, 3).mean(0)
    assert red > green > blue and red > 100, "orange-red retina"
    # The optic disc is the brightest spot, on the image's right for a right eye.
    brightness = image.sum(2)
    brightest_col = np.unravel_index(brightness.argmax(), brightness.shape)[1]
    assert (brightest_col > width / 2) == (eye == "R")


def test_masks_are_written_beside_not_among_the_scans(dataset):
    for path in (dataset / "lesion_masks").rglob("*.png"):
        mask = np.asarray(Image.open(path))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255} and mask.any()
        assert any((dataset / "train_images").glob(f"{path.stem}.*")), path.name

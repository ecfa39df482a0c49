"""Each published dataset layout, rebuilt small on disk, trains through the real loop."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import smoke_config
from retina.config import DataConfig
from retina.data.sources import build_manifest
from retina.data.synthetic import render_fundus
from retina.data.ungradable import NO_GRADE, ungradable_scans
from retina.run_dir import read_history
from retina.training.loop import train


def _photo(path, grade, eye="R", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = render_fundus(np.random.default_rng(seed), grade, eye, 64)
    Image.fromarray(image).save(path, quality=90)


def _eyepacs(root):
    rows = []
    for patient in range(10, 22):
        for side in ("left", "right"):
            name = f"{patient}_{side}"
            rows.append({"image": name, "level": str(patient % 5)})
            _photo(root / "train" / f"{name}.jpeg", patient % 5, side[0].upper(), patient)
    pd.DataFrame(rows).to_csv(root / "trainLabels.csv", index=False)


def _messidor2(root):
    rows = []
    for index in range(24):
        name = f"20051020_{43808 + index}_0100_PP.png"
        _photo(root / "IMAGES" / name, index % 5, seed=index)
        rows.append(
            {
                "image_id": name,
                "adjudicated_dr_grade": str(index % 5),
                "adjudicated_dme": "0",
                "adjudicated_gradable": "1",
            }
        )
    # Adjudicated ungradable: mostly with no grade, as published; one with its file missing.
    for index, grade in enumerate(["", "", "", "3", ""]):
        name = f"ungradable{index}.png"
        if index < 4:
            _photo(root / "IMAGES" / name, 0, seed=100 + index)
        rows.append(
            {
                "image_id": name,
                "adjudicated_dr_grade": grade,
                "adjudicated_dme": "",
                "adjudicated_gradable": "0",
            }
        )
    pd.DataFrame(rows).to_csv(root / "messidor_data.csv", index=False)


def _idrid(root):
    for part, count, images in (
        ("a. IDRiD_Disease Grading_Training Labels.csv", 20, "a. Training Set"),
        ("b. IDRiD_Disease Grading_Testing Labels.csv", 6, "b. Testing Set"),
    ):
        rows = []
        for index in range(1, count + 1):
            name = f"IDRiD_{index:03d}"
            _photo(root / "1. Original Images" / images / f"{name}.jpg", index % 5, seed=index)
            # The published CSVs carry a trailing space in one header and blank rows.
            rows.append(
                {
                    "Image name": name,
                    "Retinopathy grade": str(index % 5),
                    "Risk of macular edema ": "0",
                }
            )
        rows.append({"Image name": "", "Retinopathy grade": "", "Risk of macular edema ": ""})
        (root / "2. Groundtruths").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(root / "2. Groundtruths" / part, index=False)


def _folder(root):
    rows = []
    for index in range(24):
        path = f"clinic/{index // 8}/scan{index}.png"
        _photo(root / path, index % 5, seed=index)
        rows.append(
            {
                "path": path,
                "grade": str(index % 5),
                "patient": f"MRN{index // 2}",
                "split": "test" if index >= 20 else "",
            }
        )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


LAYOUTS = {
    "eyepacs": (_eyepacs, []),
    "messidor2": (_messidor2, []),
    "idrid": (_idrid, []),
    "folder": (_folder, ["data.patient_column=patient", "data.split_column=split"]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_trains(layout, tmp_path):
    make, extra = LAYOUTS[layout]
    root = tmp_path / layout
    root.mkdir()
    make(root)
    cfg = smoke_config(
        tmp_path,
        [
            f"data={layout}",
            "train.epochs=1",
            "train.batch_size=2",
            "train.evaluate_test=false",
            *extra,
        ],
        data_root=root,
    )
    train(cfg, tmp_path / "run")
    history = read_history(tmp_path / "run")
    assert history["last_step"].iloc[-1] >= 1
    manifest = pd.read_csv(tmp_path / "run" / "manifest.csv", dtype=str)
    assert (manifest.groupby("patient")["split"].nunique() == 1).all()
    assert set(manifest["split"]) == {"train", "val", "test"}
    if layout == "messidor2":  # its adjudicated ungradable scans, kept for the quality gate
        assert len(pd.read_csv(tmp_path / "run" / "ungradable_scans.csv")) == 4


def test_eyepacs_pairs_the_eyes_of_a_patient(tmp_path):
    _eyepacs(tmp_path)
    manifest, _ = build_manifest(DataConfig(layout="eyepacs", root=str(tmp_path)))
    assert manifest.groupby("patient").size().eq(2).all()
    assert sorted(manifest["eye"].unique()) == ["L", "R"]


def test_published_test_sets_win(tmp_path):
    _idrid(tmp_path)
    manifest, _ = build_manifest(DataConfig(layout="idrid", root=str(tmp_path)))
    test = manifest[manifest["split"] == "test"]
    assert len(test) == 6 and test["scan_id"].str.startswith("test-").all()
    assert len(manifest) == 26  # blank rows dropped


def test_separate_test_csv_is_the_test_split(tmp_path):
    _folder(tmp_path)
    table = pd.read_csv(tmp_path / "labels.csv", dtype=str, keep_default_na=False)
    table[table.index < 18].to_csv(tmp_path / "train.csv", index=False)
    table[table.index >= 18].to_csv(tmp_path / "test.csv", index=False)
    cfg = DataConfig(
        layout="folder",
        root=str(tmp_path),
        labels_csv="train.csv",
        test_labels_csv="test.csv",
        patient_column="patient",
        paths_in_outputs="keep",  # scan ids are then the file names
    )
    manifest, problems = build_manifest(cfg)
    assert not problems and len(manifest) == 24
    test = manifest[manifest["split"] == "test"]
    assert sorted(test["scan_id"]) == sorted(f"scan{i}" for i in range(18, 24))
    assert set(manifest[manifest.index < 18]["split"]) <= {"train", "val"}


def test_messidor2_ungradable_scans_are_kept_for_the_quality_gate(tmp_path):
    _messidor2(tmp_path)
    cfg = DataConfig(layout="messidor2", root=str(tmp_path))
    manifest, _ = build_manifest(cfg)
    assert len(manifest) == 24 and not manifest["scan_id"].str.startswith("ungradable").any()
    ungradable = ungradable_scans(cfg, manifest).set_index("scan_id")
    # The four whose file exists, the grade where the table gives one.
    assert sorted(ungradable.index) == [f"ungradable{i}" for i in range(4)]
    assert ungradable["grade"].to_dict() == {
        "ungradable0": NO_GRADE,
        "ungradable1": NO_GRADE,
        "ungradable2": NO_GRADE,
        "ungradable3": 3,
    }
    assert set(ungradable["split"]) <= {"train", "val", "test"}


@pytest.mark.parametrize(
    "bad", ["../outside.png", "/etc/passwd", "http://host/x.png", "link/escape.png"]
)
def test_folder_paths_must_stay_inside_the_root(tmp_path, bad):
    root = tmp_path / "root"
    _photo(tmp_path / "outside.png", 0)
    _photo(root / "inside.png", 0)
    (root / "link").mkdir(parents=True)
    (root / "link" / "escape.png").symlink_to(tmp_path / "outside.png")
    rows = [{"path": "inside.png", "grade": "0"}, {"path": bad, "grade": "0"}]
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    cfg = DataConfig(layout="folder", root=str(root), labels_csv="labels.csv")
    manifest, problems = build_manifest(cfg)
    assert manifest["path"].tolist() == ["inside.png"]
    assert len(problems) == 1 and problems[0]["reason"].startswith("refused")
    assert problems[0]["path"] == bad

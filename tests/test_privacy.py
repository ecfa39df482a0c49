"""Clinic exports name folders after patients: no run, evaluation or prediction file may
carry a source path or folder name, and the lookup beside the cache maps ids back."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import smoke_config
from retina.data.privacy import LOOKUP_FILE
from retina.data.synthetic import render_fundus
from retina.serving.unlabeled import predict_scans
from retina.training.loop import train

PATIENTS = [f"{family}_{given}_{1000 + i}" for i, (family, given) in enumerate(
    [("DOE", "JANE"), ("ROE", "RICHARD"), ("POE", "EDGAR"), ("LOE", "MARY"), ("MOE", "ANNA"),
     ("NOE", "PAUL"), ("KOE", "LISA"), ("HOE", "JOHN"), ("GOE", "RITA"), ("FOE", "OTTO"),
     ("BOE", "ERIK"), ("COE", "NINA")]
)]  # fmt: skip


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """``<PATIENT>/OD.jpg`` and ``OS.jpg`` for 12 patients, one unreadable scan, one row
    whose file is missing, and labels.csv (the last three scans graded ungradable)."""
    root = tmp_path_factory.mktemp("clinic")
    rows = []
    for index, patient in enumerate(PATIENTS):
        (root / patient).mkdir()
        for eye in ("OD", "OS"):
            grade = (index + (eye == "OS")) % 5
            image = render_fundus(np.random.default_rng(index), grade, "R", 96)
            Image.fromarray(image).save(root / patient / f"{eye}.jpg", quality=90)
            gradable = int(len(rows) < 21)
            rows.append(
                {
                    "path": f"{patient}/{eye}.jpg",
                    "grade": grade,
                    "patient": patient,
                    "gradable": gradable,
                }
            )
    (root / PATIENTS[0] / "OD.jpg").write_bytes(b"not a jpeg")
    rows.append(
        {"path": f"{PATIENTS[1]}/OU.jpg", "grade": 0, "patient": PATIENTS[1], "gradable": 1}
    )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def _files_naming_patients(folder) -> dict:
    found = {}
    for path in (p for p in folder.rglob("*") if p.is_file()):
        content = path.read_bytes()
        named = [name for name in PATIENTS if name.encode() in content]
        if named:
            found[str(path.relative_to(folder))] = named
    return found


def test_no_output_names_a_patient_folder_and_the_lookup_maps_ids_back(clinic, tmp_path):
    cfg = smoke_config(
        tmp_path,
        [
            "data=folder",
            "data.labels_csv=labels.csv",
            "data.patient_column=patient",
            "data.gradable_column=gradable",  # ungradable_scans.csv too
            "train.epochs=1",
            "train.batch_size=2",
        ],
        data_root=clinic,
    )
    run_dir = tmp_path / "run"
    train(cfg, run_dir)  # evaluates the test split too
    predict_scans(run_dir, clinic, checkpoint="latest", output_dir=tmp_path / "predict")
    assert (run_dir / "bad_inputs.csv").is_file() and (run_dir / "eval").is_dir()
    assert len(list(run_dir.rglob("*"))) > 15
    assert _files_naming_patients(run_dir) == {}
    assert _files_naming_patients(tmp_path / "predict") == {}

    lookup = pd.read_csv(tmp_path / "cache" / LOOKUP_FILE, dtype=str)
    paths = lookup.set_index("scan_id")["path"]
    manifest = pd.read_csv(run_dir / "manifest.csv", dtype=str, keep_default_na=False)
    assert (manifest["path"] == "").all() and manifest["scan_id"].str.startswith("scan-").all()
    assert all((clinic / paths[scan]).is_file() for scan in manifest["scan_id"])
    ungradable = pd.read_csv(run_dir / "ungradable_scans.csv", dtype=str, keep_default_na=False)
    assert (ungradable["path"] == "").all()
    assert sorted(paths[ungradable["scan_id"]]) == [
        f"{PATIENTS[10]}/OS.jpg",
        *(f"{PATIENTS[11]}/{eye}.jpg" for eye in ("OD", "OS")),
    ]
    bad = pd.read_csv(run_dir / "bad_inputs.csv", dtype=str)
    assert sorted(paths[bad["scan_id"]]) == [f"{PATIENTS[0]}/OD.jpg", f"{PATIENTS[1]}/OU.jpg"]
    predictions = pd.read_csv(tmp_path / "predict" / "predictions.csv", dtype=str)
    assert len(predictions) == 23 and set(paths[predictions["scan_id"]]) <= {
        f"{patient}/{eye}.jpg" for patient in PATIENTS for eye in ("OD", "OS")
    }


def test_the_resumed_run_finds_its_scans_through_the_lookup(clinic, tmp_path):
    overrides = ["data=folder", "data.labels_csv=labels.csv", "train.evaluate_test=false"]
    first = smoke_config(tmp_path, [*overrides, "train.epochs=1"], data_root=clinic)
    train(first, tmp_path / "run")
    manifest = pd.read_csv(tmp_path / "run" / "manifest.csv", keep_default_na=False)
    assert (manifest["path"] == "").all()  # so the resumed run can only use the lookup
    second = smoke_config(tmp_path, [*overrides, "train.epochs=2"], data_root=clinic)
    train(second, tmp_path / "run")
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [1, 2]

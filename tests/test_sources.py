import numpy as np
import pandas as pd
import pytest

from retina.config import DataConfig
from retina.data.sources import build_manifest, pseudonymise
from retina.data.splits import split_by_patient
from retina.errors import DataError


def _aptos(root, rows, make_files=True):
    (root / "train_images").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    if make_files:
        for row in rows:
            (root / "train_images" / f"{row['id_code']}.png").write_bytes(b"png")
    return DataConfig(layout="aptos2019", root=str(root))


def test_split_keeps_each_patient_in_one_split_and_stratifies():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(200)], 2)
    grades = np.repeat(rng.integers(0, 5, 200), 2)
    manifest = pd.DataFrame({"patient": patients, "grade": grades})
    split = split_by_patient(manifest, 0.15, 0.15, seed=1)
    assert (manifest.assign(split=split).groupby("patient")["split"].nunique() == 1).all()
    counts = split.value_counts()
    assert counts["val"] == counts["test"] == 60 and counts["train"] == 280
    for grade in range(5):  # every grade reaches every split in proportion
        share = (split[grades == grade] == "test").mean()
        assert 0.1 <= share <= 0.2


def test_split_is_seeded():
    manifest = pd.DataFrame({"patient": [f"p{i}" for i in range(50)], "grade": [0, 2] * 25})
    a, b = (split_by_patient(manifest, 0.2, 0.2, seed=s) for s in (7, 7))
    c = split_by_patient(manifest, 0.2, 0.2, seed=8)
    assert a.equals(b) and not a.equals(c)


def test_aptos_reader_keeps_ids_as_written_and_pseudonymises_patients(tmp_path):
    cfg = _aptos(
        tmp_path,
        [
            {"id_code": "00123", "diagnosis": "0", "patient_id": "MRN-77", "eye": "R"},
            {"id_code": "NA", "diagnosis": "2", "patient_id": "MRN-77", "eye": "L"},
            {"id_code": "abc", "diagnosis": "4", "patient_id": "MRN-78", "eye": "R"},
        ],
    )
    manifest, _ = build_manifest(cfg)
    assert manifest["scan_id"].tolist() == ["00123", "NA", "abc"]
    assert manifest["path"].tolist()[0] == "train_images/00123.png"
    assert manifest["grade"].tolist() == [0, 2, 4]
    assert manifest["patient"].iloc[0] == pseudonymise("MRN-77", cfg.id_salt)
    assert not manifest["patient"].str.contains("MRN").any()


def test_bad_grade_is_reported_with_file_and_row(tmp_path):
    cfg = _aptos(
        tmp_path,
        [
            {"id_code": "a", "diagnosis": "0"},
            {"id_code": "b", "diagnosis": "7"},
            {"id_code": "c", "diagnosis": "NA"},
        ],
    )
    manifest, problems = build_manifest(cfg)
    assert manifest["scan_id"].tolist() == ["a"]
    assert [(p["path"], p["table"], p["row"]) for p in problems] == [
        ("b", "train.csv", 3),
        ("c", "train.csv", 4),
    ]
    assert problems[0]["reason"].startswith("unknown label '7'")


def test_missing_image_and_duplicate_are_reported(tmp_path):
    cfg = _aptos(
        tmp_path, [{"id_code": "here", "diagnosis": "1"}, {"id_code": "here", "diagnosis": "1"}]
    )
    pd.DataFrame(
        [
            {"id_code": "here", "diagnosis": "1"},
            {"id_code": "here", "diagnosis": "1"},
            {"id_code": "gone", "diagnosis": "1"},
        ]
    ).to_csv(tmp_path / "train.csv", index=False)
    manifest, problems = build_manifest(cfg)
    assert len(manifest) == 1
    reasons = {p["row"]: p["reason"] for p in problems}
    assert reasons[3].startswith("duplicate of row 2") and reasons[4].startswith("missing file")


def test_nothing_usable_is_an_error(tmp_path):
    cfg = _aptos(tmp_path, [{"id_code": "gone", "diagnosis": "1"}], make_files=False)
    with pytest.raises(DataError, match="no usable scan"):
        build_manifest(cfg)

import numpy as np
import pandas as pd
import pytest

from retina.config import DataConfig
from retina.data.label_tables import pseudonymise
from retina.data.sources import build_manifest
from retina.data.splits import assign_folds, split_by_patient
from retina.errors import ConfigError, DataError


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


def _patients(n: int, seed: int) -> pd.DataFrame:
    """Two eyes per patient, grades 0-4 with a patient's eyes one grade apart at most."""
    rng = np.random.default_rng(seed)
    worst = rng.choice(5, n, p=[0.4, 0.15, 0.25, 0.1, 0.1])
    other = np.maximum(worst - rng.integers(0, 2, n), 0)
    return pd.DataFrame(
        {
            "patient": np.repeat([f"p{i:03d}" for i in range(n)], 2),
            "grade": np.column_stack([worst, other]).ravel(),
        }
    )


@pytest.mark.parametrize("folds", [3, 5])
def test_folds_deal_every_development_patient_once_stratified_and_leave_test_alone(folds):
    manifest = _patients(203, seed=folds)
    manifest["split"] = split_by_patient(manifest, 0.15, 0.15, seed=4)
    worst = manifest.groupby("patient")["grade"].max()
    jobs = [assign_folds(manifest, folds, fold, seed=4) for fold in range(folds)]
    for fold, job in enumerate(jobs):
        test = job[job["split"] == "test"]
        assert test[["patient", "grade", "split"]].equals(
            manifest.loc[manifest["split"] == "test", ["patient", "grade", "split"]]
        )
        assert test["fold"].isna().all()
        assert (job.loc[job["split"] == "val", "fold"] == fold).all()
        assert (job.loc[job["split"] == "train", "fold"] != fold).all()
    development = jobs[0][jobs[0]["split"] != "test"]
    fold_of_patient = development.groupby("patient")["fold"].agg(["nunique", "first"])
    assert (fold_of_patient["nunique"] == 1).all()  # patient-disjoint folds
    validated = pd.concat([job.loc[job["split"] == "val", "patient"] for job in jobs])
    assert sorted(validated.unique()) == sorted(development["patient"].unique())
    assert validated.groupby(validated).size().eq(2).all()  # each eye once, in one job only
    strata = pd.crosstab(worst[fold_of_patient.index], fold_of_patient["first"])
    ideal = strata.sum(axis=1).to_numpy()[:, None] / folds
    assert (np.abs(strata.to_numpy() - ideal) < 1).all(), strata  # within one patient


def test_folds_name_the_keys_when_out_of_range():
    manifest = _patients(20, seed=0).assign(split="train")
    with pytest.raises(ConfigError, match=r"data.folds=5 and data.fold=5"):
        assign_folds(manifest, 5, 5, seed=0)
    with pytest.raises(DataError, match=r"data.folds=30: only 20 patients"):
        assign_folds(manifest, 30, 0, seed=0)

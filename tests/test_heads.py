"""Every grading head end to end on the smoke preset: trained, its cut-points and link
fitted on validation and kept in the checkpoint, evaluated, predicted, exported, and the
exported SavedModel (in a fresh process) and the .keras file (through serving.json's
grading) deciding as predict does."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, smoke_config
from retina.checkpoint.read import find_checkpoint, read_grading
from retina.evaluation.held_out import evaluate_run
from retina.icdr import GRADE_BOUNDARIES
from retina.serving.artifacts import export_run
from retina.serving.unlabeled import predict_scans
from retina.training.loop import train

HEADS = ["coral", "corn", "regression"]


@pytest.fixture(scope="module", params=HEADS)
def head_run(request, shared_data, tmp_path_factory):
    """Three epochs of the smoke preset with ``model.head`` set, and a folder of its scans."""
    tmp = tmp_path_factory.mktemp(request.param)
    overrides = [f"model.head={request.param}", "train.epochs=3", "train.evaluate_test=false"]
    train(smoke_config(shared_data, overrides), tmp / "run")
    scans = tmp / "scans"
    scans.mkdir()
    for path in sorted((shared_data / "synthetic" / "train_images").glob("*.png"))[:6]:
        shutil.copy(path, scans / path.name)
    return request.param, tmp / "run", scans


def test_the_fitted_grading_is_kept_in_the_checkpoint(head_run):
    head, run_dir, _ = head_run
    grading = read_grading(find_checkpoint(run_dir, "latest"), head)
    assert grading.head == head and list(grading.cut_points) == sorted(grading.cut_points)
    history = pd.read_csv(run_dir / "history.csv")
    assert history["val_quadratic_weighted_kappa"].notna().all()
    if head == "regression":
        assert grading.link[0] > 0  # fitted on validation: rises with the regressed grade
    metrics = evaluate_run(run_dir, "latest", n_resamples=20)
    checkpoint = find_checkpoint(run_dir, "latest").name
    predictions = pd.read_csv(run_dir / "eval" / f"{checkpoint}-test" / "predictions.csv")
    probabilities = predictions[[f"prob_grade_{g}" for g in range(5)]].to_numpy()
    assert (
        predictions["predicted_grade"].tolist() == grading.predicted_grades(probabilities).tolist()
    )
    assert metrics["eye_level"]["n"] == len(predictions)
    assert metrics["grading"]["cut_points"] == list(grading.cut_points)
    report = (run_dir / "eval" / f"{checkpoint}-test" / "report.md").read_text()
    assert f"- Grade call: {head} head, the expected grade cut at" in report


def test_predict_the_saved_model_and_the_keras_file_decide_alike(head_run, tmp_path):
    head, run_dir, scans = head_run
    predictions = pd.read_csv(
        predict_scans(run_dir, scans, "latest", output_dir=tmp_path / "p", paths_in_outputs="keep")
    )
    saved = export_run(run_dir, "saved_model", "latest", output_dir=tmp_path / "saved")
    keras_dir = export_run(run_dir, "keras", "latest", output_dir=tmp_path / "keras")
    script = textwrap.dedent(f"""
        import json, sys
        import keras, pandas as pd, tensorflow as tf
        from retina.data.cache import build_cache
        from retina.data.pipeline import decode_cached
        from retina.models.grading import Grading
        from retina.run_dir import load_run_config
        cfg = load_run_config("{run_dir}/config.yaml")
        rows = pd.DataFrame({{"path": {predictions["path"].tolist()!r}}})
        cached = build_cache(rows, "{scans}", cfg.preprocess, cfg.data.cache_dir)[0]
        images = tf.cast(tf.stack([decode_cached(p) for p in cached["cache_path"]]), tf.uint8)
        serve = tf.saved_model.load("{saved}/saved_model").signatures["serving_default"]
        out = serve(images=images)
        serving = json.load(open("{keras_dir}/serving.json"))["grading"]
        grading = Grading(serving["head"], tuple(serving["cut_points"]), tuple(serving["link"]))
        model = keras.saving.load_model("{keras_dir}/model.keras")
        probabilities = grading.probabilities(model(images, training=False)).numpy()
        json.dump({{
            "saved_grade": out["predicted_grade"].numpy().tolist(),
            "saved_referable": out["referable_probability"].numpy().tolist(),
            "saved_referred": out["referred_default"].numpy().astype(int).tolist(),
            "keras_grade": grading.predicted_grades(probabilities).tolist(),
            "keras_referable": probabilities[:, 2:].sum(axis=1).tolist(),
        }}, sys.stdout)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    expected_grades = predictions["predicted_grade"].tolist()
    assert found["saved_grade"] == expected_grades == found["keras_grade"]
    assert found["saved_referred"] == predictions["referred"].tolist()
    for key in ("saved_referable", "keras_referable"):
        np.testing.assert_allclose(found[key], predictions["referable_probability"], atol=1e-5)


def test_fixed_thresholds_keep_the_grade_boundaries(shared_data, tmp_path):
    cfg = smoke_config(
        shared_data,
        [
            "model.head=corn",
            "grading.thresholds=fixed",
            "train.epochs=1",
            "train.evaluate_test=false",
        ],
    )
    train(cfg, tmp_path / "run")
    grading = read_grading(find_checkpoint(tmp_path / "run", "latest"), "corn")
    assert grading.cut_points == GRADE_BOUNDARIES

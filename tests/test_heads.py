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
from retina.config import ExplainConfig, UncertaintyConfig
from retina.errors import ConfigError
from retina.evaluation.ensembles import evaluate_ensemble
from retina.evaluation.held_out import Options, evaluate_run
from retina.explanations.overlays import explain_run
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
    """With an MC-dropout referral policy chosen on validation: predict, the SavedModel (in
    a fresh process) and the .keras file read through serving.json agree scan by scan."""
    head, run_dir, scans = head_run
    sampled = UncertaintyConfig(method="mc_dropout", samples=6, referral_fraction=0.3)
    evaluate_run(run_dir, "latest", split="val", n_resamples=20, uncertainty=sampled)
    predictions = pd.read_csv(
        predict_scans(
            run_dir,
            scans,
            "latest",
            output_dir=tmp_path / "p",
            paths_in_outputs="keep",
            uncertainty=sampled,
        )
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
            "saved_uncertainty": out["uncertainty"].numpy().tolist(),
            "saved_refer": out["refer_to_specialist"].numpy().astype(int).tolist(),
            "keras_grade": grading.predicted_grades(probabilities).tolist(),
        }}, sys.stdout)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["saved_grade"] == predictions["predicted_grade"].tolist()
    assert found["saved_refer"] == predictions["refer_to_specialist"].tolist()
    np.testing.assert_allclose(
        found["saved_uncertainty"], predictions["referable_predictive_entropy"], atol=1e-5
    )
    # The .keras file is the model alone: its one deterministic pass, read as serving.json
    # says, calls the grades predict calls without sampling.
    plain = pd.read_csv(
        predict_scans(run_dir, scans, "latest", output_dir=tmp_path / "q", paths_in_outputs="keep")
    )
    assert found["keras_grade"] == plain["predicted_grade"].tolist()


def test_an_ensemble_of_one_run_is_that_run(head_run, tmp_path):
    _, run_dir, _ = head_run
    single = evaluate_run(run_dir, "latest", n_resamples=20)
    one = evaluate_ensemble([run_dir], tmp_path / "one", "latest", options=Options(n_resamples=20))
    assert json.dumps(one["eye_level"], sort_keys=True) == json.dumps(
        single["eye_level"], sort_keys=True
    )


def test_grad_cam_explains_the_referable_score_and_refuses_grade_targets(head_run, tmp_path):
    _, run_dir, _ = head_run
    out = explain_run(ExplainConfig(run_dir=str(run_dir), limit=2, output_dir=str(tmp_path)))
    assert len(pd.read_csv(out / "explanations.csv")) == 2
    with pytest.raises(ConfigError, match="only model.head=softmax has a logit per grade"):
        explain_run(ExplainConfig(run_dir=str(run_dir), limit=1, targets=["3"]))


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

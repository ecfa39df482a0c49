"""predict on unlabeled scans and export for serving, on a real smoke run."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from conftest import ROOT, run_module
from retina.errors import ConfigError
from retina.evaluation.held_out import evaluate_run
from retina.serving.artifacts import export_run


@pytest.fixture(scope="module")
def run(smoke_run, tmp_path_factory):
    """A copy of the session's smoke run: these tests write into it (predict/, eval/)."""
    run_dir = tmp_path_factory.mktemp("serving") / "run"
    shutil.copytree(smoke_run, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def mixed_folder(run, shared_data, tmp_path_factory):
    """Two scans of each format from the synthetic set, plus three unreadable files."""
    folder = tmp_path_factory.mktemp("unlabeled")
    images = shared_data / "synthetic" / "train_images"
    for suffix in (".png", ".jpg", ".dcm"):
        for path in sorted(images.glob(f"*{suffix}"))[:2]:
            (folder / "nested").mkdir(exist_ok=True)
            shutil.copy(path, folder / "nested" / path.name)
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "empty.png").write_bytes(b"")
    png = next(images.glob("*.png")).read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 3])
    (folder / "notes.txt").write_text("not a scan")
    return folder


def test_predict_on_a_mixed_folder_lists_readable_and_unreadable(run, mixed_folder):
    result = run_module(
        "retina.predict",
        f"run_dir={run}",
        f"input={mixed_folder}",
        "paths_in_outputs=keep",  # the assertions below read the paths
        cwd=run.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = pd.read_csv(run / "predict" / "predictions.csv")
    unreadable = pd.read_csv(run / "predict" / "unreadable.csv")
    assert sorted(p.rsplit(".", 1)[1] for p in predictions["path"]) == sorted(
        ["png", "png", "jpg", "jpg", "dcm", "dcm"]
    )
    assert sorted(unreadable["path"]) == ["empty.png", "random.jpg", "truncated.png"]
    assert np.allclose(predictions.filter(like="prob_grade_").sum(axis=1), 1, atol=1e-5)
    assert (
        predictions["referred"]
        == (predictions["referable_probability"] >= predictions["threshold"])
    ).all()
    dicom_ids = set()
    for path in mixed_folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        dicom_ids |= {ds.PatientID, *str(ds.PatientName).split("^")}
    written = (run / "predict" / "predictions.csv").read_text() + result.stdout + result.stderr
    assert dicom_ids and not [i for i in dicom_ids if i in written]


def test_predict_explain_writes_an_overlay_per_scan_named_by_its_id(run, mixed_folder, tmp_path):
    from retina.serving.unlabeled import predict_scans

    path = predict_scans(run, mixed_folder, output_dir=tmp_path, explain=True)
    predictions = pd.read_csv(path)
    assert (predictions["overlay"] == predictions["scan_id"] + ".png").all()
    overlays = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert overlays == sorted(predictions["overlay"]) and len(overlays) == 6
    with Image.open(tmp_path / "overlays" / overlays[0]) as overlay:
        assert overlay.size[0] >= 256 and overlay.mode == "RGB"


def test_predict_refuses_an_unknown_operating_point(run, mixed_folder):
    from retina.serving.unlabeled import predict_scans

    with pytest.raises(ConfigError, match="operating_point"):
        predict_scans(run, mixed_folder, operating_point="sometimes")


@pytest.mark.parametrize("fmt", ["saved_model", "keras"])
def test_export_reloads_in_a_fresh_process_and_reproduces_evaluation(run, fmt, tmp_path):
    metrics = evaluate_run(run, checkpoint="best", split="test", n_resamples=20)
    folder = run / "eval" / f"{metrics['checkpoint']}-test"
    expected = pd.read_csv(folder / "predictions.csv")
    out_dir = export_run(run, fmt, checkpoint="best", output_dir=tmp_path / fmt)
    serving = json.loads((out_dir / "serving.json").read_text())
    assert set(serving["operating_points"]) == {"default", "high_sensitivity", "high_specificity"}
    manifest = pd.read_csv(run / "manifest.csv", dtype=str)
    scans = manifest.set_index("scan_id").loc[expected["scan_id"], "path"]
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf, keras
        from retina.data.cache import build_cache
        from retina.run_dir import load_run_config
        import pandas as pd
        cfg = load_run_config("{run}/config.yaml")
        rows = pd.DataFrame({{"path": {list(scans)!r}}})
        cached = build_cache(rows, cfg.data.root, cfg.preprocess, cfg.data.cache_dir)[0]
        cached = cached["cache_path"]
        images = np.stack([tf.io.decode_png(tf.io.read_file(p), channels=3) for p in cached])
        if "{fmt}" == "keras":
            model = keras.saving.load_model("{out_dir}/model.keras")
            out = tf.nn.softmax(model(images, training=False)).numpy()
        else:
            serve = tf.saved_model.load("{out_dir}/saved_model").signatures["serving_default"]
            result = serve(images=tf.constant(images))
            out = result["probabilities"].numpy()
            assert "referred_high_sensitivity" in result
        json.dump(out.tolist(), sys.stdout)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reloaded = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(reloaded, expected.filter(like="prob_grade_").to_numpy(), atol=2e-6)


def test_evaluate_scores_another_dataset_with_test_time_augmentation(run, shared_data):
    result = run_module(
        "retina.evaluate",
        f"run_dir={run}",
        "data=aptos2019",
        f"data.root={shared_data / 'synthetic'}",
        f"data.cache_dir={shared_data / 'cache'}",
        "split=all",
        "tta=true",
        "bootstrap_resamples=50",
        cwd=run.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run / "eval" / "ckpt-5-aptos2019-all"
    metrics = json.loads((folder / "metrics.json").read_text())
    labels = pd.read_csv(shared_data / "synthetic" / "train.csv")
    scans = (labels["gradable"] == 1).sum()  # the APTOS reader leaves out ungradable rows
    gate = metrics["quality_gate"]  # the metrics are on the scans the gate lets through
    assert gate["scans"] == scans and metrics["eye_level"]["n"] == scans - gate["withheld"]
    assert metrics["test_time_augmentation"] is True
    assert metrics["dataset"] == "aptos2019-all"


def test_test_time_augmentation_averages_the_four_flips(run):
    import tensorflow as tf

    from retina.data.prepare import prepare_run_data
    from retina.inference.outputs import predict_probabilities
    from retina.inference.restore import load_run_model

    cfg, model, _ = load_run_model(run, "latest")
    paths = prepare_run_data(cfg, run, splits=("test",))["cache_path"].tolist()
    images = tf.stack([tf.io.decode_png(tf.io.read_file(p), channels=3) for p in paths])
    views = [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]
    by_hand = np.mean([tf.nn.softmax(model(v, training=False)).numpy() for v in views], axis=0)
    averaged = predict_probabilities(model, paths, 8, tta=True)
    np.testing.assert_allclose(averaged, by_hand, atol=1e-6)
    assert not np.allclose(averaged, predict_probabilities(model, paths, 8), atol=1e-4)


def test_predict_and_the_saved_model_agree_on_uncertainty_and_referral(run, mixed_folder, tmp_path):
    from retina.config import UncertaintyConfig
    from retina.serving.unlabeled import predict_scans

    sampled = UncertaintyConfig(method="mc_dropout", samples=8, referral_fraction=0.5)
    evaluate_run(run, "best", split="val", n_resamples=20, uncertainty=sampled)
    policy = json.loads((run / "referral.json").read_text())
    assert policy["method"] == "mc_dropout" and policy["samples"] == 8
    assert set(policy["calibration"]) == {"slope", "intercept"}  # applied in both below
    predictions = pd.read_csv(
        predict_scans(
            run,
            mixed_folder,
            output_dir=tmp_path / "predict",
            paths_in_outputs="keep",
            uncertainty=sampled,
        )
    )
    assert predictions["referable_mutual_information"].gt(0).all()
    out_dir = export_run(run, "saved_model", checkpoint="best", output_dir=tmp_path / "export")
    script = textwrap.dedent(f"""
        import json, sys
        import pandas as pd, tensorflow as tf
        from retina.data.cache import build_cache
        from retina.data.pipeline import decode_cached
        from retina.run_dir import load_run_config
        cfg = load_run_config("{run}/config.yaml")
        rows = pd.DataFrame({{"path": {predictions["path"].tolist()!r}}})
        cached = build_cache(rows, "{mixed_folder}", cfg.preprocess, cfg.data.cache_dir)[0]
        images = tf.stack([decode_cached(p) for p in cached["cache_path"]])
        serve = tf.saved_model.load("{out_dir}/saved_model").signatures["serving_default"]
        out = serve(images=tf.cast(images, tf.uint8))
        json.dump([out["uncertainty"].numpy().tolist(),
                   out["refer_to_specialist"].numpy().astype(int).tolist()], sys.stdout)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uncertainty, referred = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(uncertainty, predictions["referable_predictive_entropy"], atol=1e-5)
    assert referred == predictions["refer_to_specialist"].tolist()
    serving = json.loads((out_dir / "serving.json").read_text())
    assert serving["referral"]["threshold"] == pytest.approx(policy["threshold"])

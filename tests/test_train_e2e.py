"""The first slice end to end, through the real entry points: train, resume, evaluate."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import tensorflow as tf

from conftest import run_module, smoke_config
from retina.checkpoint import find_checkpoint
from retina.errors import CheckpointError
from retina.run_dir import load_run_config
from retina.training.loop import train
from retina.training.session import open_session


def _optimizer_values(reader) -> dict[str, np.ndarray]:
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith("optimizers/all/") and "/_trainable_variables/" not in key
    }


def _identifiers(data_root: Path) -> set[str]:
    """Every synthetic patient ID and name part the data carries (CSV and DICOM)."""
    found = set(pd.read_csv(data_root / "train.csv", dtype=str)["patient_id"])
    for path in (data_root / "train_images").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        found |= {ds.PatientID, *str(ds.PatientName).split("^")}
    return found


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """Trains 1 epoch, checks the restore in-process, then resumes to 2 epochs."""
    tmp = tmp_path_factory.mktemp("e2e")
    run_dir = tmp / "run"
    common = [
        "debug=smoke",
        f"data.root={tmp / 'synthetic'}",
        f"data.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={run_dir}",
        "train.precision=float32",
        "train.evaluate_test=false",
    ]
    first = run_module("retina.train", *common, "train.epochs=1", cwd=tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = find_checkpoint(run_dir)
    session = open_session(load_run_config(run_dir / "config.yaml"), run_dir)
    second = run_module("retina.train", *common, "train.epochs=2", cwd=tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    return dict(
        tmp=tmp,
        run_dir=run_dir,
        first=first.stdout + first.stderr,
        second=second.stdout + second.stderr,
        saved=saved,
        session=session,
    )


def test_first_run_starts_from_scratch(resumed_run):
    assert "Initializing from scratch." in resumed_run["first"]
    assert "Training steps 1..5 " in resumed_run["first"]


def test_second_run_restores_and_continues_at_saved_step_plus_one(resumed_run):
    saved_step = int(
        tf.train.load_checkpoint(resumed_run["saved"]).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
    )
    assert saved_step == 5
    assert f"Restored from {resumed_run['saved']}" in resumed_run["second"]
    assert f"Training steps {saved_step + 1}..10 " in resumed_run["second"]
    history = pd.read_csv(resumed_run["run_dir"] / "history.csv")
    assert history["first_step"].tolist() == [1, 6] and history["epoch"].tolist() == [1, 2]


def test_restore_brings_back_optimizer_iterations_and_moments(resumed_run):
    session = resumed_run["session"]
    assert session.restored_from == resumed_run["saved"]
    saved = _optimizer_values(tf.train.load_checkpoint(resumed_run["saved"]))
    live = {
        f"optimizers/all/_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE": v.numpy()
        for i, v in enumerate(session.state.optimizers["all"].variables)
    }
    live["optimizers/all/_iterations/.ATTRIBUTES/VARIABLE_VALUE"] = session.state.optimizers[
        "all"
    ].iterations.numpy()
    live["optimizers/all/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"] = session.state.optimizers[
        "all"
    ].learning_rate.numpy()
    moments = [k for k in saved if "/_variables/" in k]
    assert len(moments) == 2 * len(session.state.model.trainable_variables)
    assert int(saved["optimizers/all/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 5
    for key, value in saved.items():
        np.testing.assert_array_equal(live[key], value, err_msg=key)
    assert any(np.abs(saved[k]).sum() > 0 for k in moments), "moments were trained"


def test_resumed_optimizer_kept_counting(resumed_run):
    final = tf.train.load_checkpoint(find_checkpoint(resumed_run["run_dir"]))
    assert int(final.get_tensor("optimizers/all/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 10


EVAL_FILES = {
    "metrics.json",
    "predictions.csv",
    "report.md",
    "report.html",
    "roc.png",
    "confusion_matrix.png",
    "calibration.png",
    "score_distributions.png",
}


@pytest.fixture(scope="module")
def evaluated(resumed_run):
    """``python -m retina.evaluate`` on best and latest, latest twice."""
    run_dir, outputs = resumed_run["run_dir"], {}
    for checkpoint in ("best", "latest", "latest"):
        result = run_module(
            "retina.evaluate",
            f"run_dir={run_dir}",
            f"checkpoint={checkpoint}",
            cwd=resumed_run["tmp"],
        )
        assert result.returncode == 0, result.stderr[-3000:]
        name = find_checkpoint(run_dir, checkpoint).name
        folder = run_dir / "eval" / f"{name}-test"
        outputs.setdefault(checkpoint, []).append(
            ((folder / "metrics.json").read_bytes(), result.stdout + result.stderr, folder)
        )
    return outputs


@pytest.mark.parametrize("checkpoint", ["best", "latest"])
def test_evaluate_writes_every_output_and_they_parse(resumed_run, evaluated, checkpoint):
    from PIL import Image

    _, _, folder = evaluated[checkpoint][0]
    assert EVAL_FILES <= {p.name for p in folder.iterdir()}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["checkpoint"] == find_checkpoint(resumed_run["run_dir"], checkpoint).name
    eye = metrics["eye_level"]
    assert set(eye["operating_points"]) == {"default", "high_sensitivity", "high_specificity"}
    assert np.array(eye["confusion_matrix"]).shape == (5, 5)
    predictions = pd.read_csv(folder / "predictions.csv", dtype={"patient": str})
    manifest = pd.read_csv(resumed_run["run_dir"] / "manifest.csv", dtype=str)
    test_scans = manifest[manifest["split"] == "test"]
    assert sorted(predictions["scan_id"]) == sorted(test_scans["scan_id"])
    assert eye["n"] == len(predictions) and metrics["patient_level"]["n"] == len(
        set(test_scans["patient"])
    )
    assert {"referable_probability", "predicted_grade", "referred_default"} <= set(predictions)
    for plot in (name for name in EVAL_FILES if name.endswith(".png")):
        assert Image.open(folder / plot).size[0] > 100
    assert "![" in (folder / "report.md").read_text()


def test_undefined_metrics_are_one_console_line_per_evaluation_and_kept_with_reasons(
    resumed_run, evaluated
):
    """The smoke run's 4-scan test split and 6-scan validation split leave metrics undefined:
    at most one line for each validation and evaluation, no warning per metric, and each
    evaluation's metrics.json lists every undefined one with where and why."""
    for output in (resumed_run["first"], resumed_run["second"]):
        lines = [line for line in output.splitlines() if "metrics undefined" in line]
        assert len(lines) <= output.count("saved ckpt-"), lines  # one per validation at most
        assert "is undefined" not in output
    for metrics_json, output, _ in (runs[0] for runs in evaluated.values()):
        lines = [line for line in output.splitlines() if "metrics undefined" in line]
        records = json.loads(metrics_json)["undefined"]
        assert len(lines) == (1 if records else 0) and "is undefined" not in output
        if records:
            assert f"metrics.json): {len(records)} metrics undefined" in lines[0]
        assert all(record["metric"] and record["where"] and record["reason"] for record in records)


def test_evaluating_the_same_checkpoint_twice_gives_identical_metrics(evaluated):
    (first, _, _), (second, _, _) = evaluated["latest"]
    assert first == second


def test_no_file_or_log_holds_patient_identifiers(resumed_run, evaluated):
    """Nor a report, model card or overlay a source path (or the data's folder)."""
    from retina.config import ExplainConfig
    from retina.explanations.overlays import explain_run
    from retina.serving.artifacts import export_run

    run_dir = resumed_run["run_dir"]
    card = export_run(run_dir, checkpoint="best") / "model_card.md"
    sections = ("Model details", "Intended use", "Out-of-scope use", "Factors", "Data")
    sections += ("Metrics", "Subgroups", "Caveats and recommendations")
    text = card.read_text()
    assert all(f"\n## {name}\n" in text for name in sections)
    assert "| referable AUC (eye) |" in text  # from the evaluation of that checkpoint
    explained = explain_run(ExplainConfig(run_dir=str(run_dir), limit=4))
    data_root = resumed_run["tmp"] / "synthetic"
    shown = [card, *explained.glob("*.png"), *run_dir.glob("eval/*/report.*")]
    shown += list(run_dir.glob("eval/*/gallery/*.png"))
    assert len(shown) > 8 and any(p.parent.name == "gallery" for p in shown)
    for path in shown:
        content = path.read_bytes()
        assert b"train_images" not in content and str(data_root).encode() not in content, path
    identifiers = _identifiers(data_root)
    assert len(identifiers) > 10
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 15
    for path in files:
        content = path.read_bytes()
        leaked = [i for i in identifiers if i.encode() in content]
        assert not leaked, f"{path} contains {leaked}"
    logs = [resumed_run["first"], resumed_run["second"]]
    logs += [output for runs in evaluated.values() for _, output, _ in runs]
    for output in logs:
        assert not [i for i in identifiers if i in output]


def test_changed_architecture_is_refused_with_a_clear_error(resumed_run):
    run_dir = resumed_run["run_dir"]
    cfg = load_run_config(run_dir / "config.yaml")
    cfg.model.widths = [8, 24]
    with pytest.raises(CheckpointError, match="does not match the model"):
        open_session(cfg, run_dir)


def test_mixed_float16_trains_and_checkpoints_the_loss_scale(tmp_path, shared_data):
    cfg = smoke_config(
        shared_data,
        ["train.precision=mixed_float16", "train.epochs=1", "train.evaluate_test=false"],
    )
    train(cfg, tmp_path)
    reader = tf.train.load_checkpoint(find_checkpoint(tmp_path))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 5
    applied = int(
        reader.get_tensor("optimizers/all/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    )
    scale = float(reader.get_tensor("optimizers/all/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE"))
    # Keras starts at 2**15; every step whose float16 gradients overflowed was skipped
    # (not applied) and halved the scale.
    assert 1 <= applied <= 5
    assert scale == 2.0**15 / 2 ** (5 - applied)
    weights = [k for k in reader.get_variable_to_shape_map() if k.startswith(("model/", "optim"))]
    assert len(weights) > 20
    for key in weights:
        value = reader.get_tensor(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), key


# TensorFlow's C++ log lines (glog format), and the start-up lines it prints before its
# logging starts; Python's own warning display (file:line: Category: message).
CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:. ]+\d+ \w+\.cc:\d+\]", re.MULTILINE)
START_UP_LINES = ("absl::InitializeLog", "cuInit", "cuda drivers", "oneDNN", "rebuild TensorFlow")
RAW_WARNING = re.compile(r"\.py:\d+: \w*Warning")


def test_the_console_shows_no_tensorflow_start_up_lines_and_no_raw_warnings(resumed_run):
    for output in (resumed_run["first"], resumed_run["second"]):
        assert not CPP_LOG_LINE.search(output), CPP_LOG_LINE.search(output).group(0)
        assert not [line for line in START_UP_LINES if line in output]
        assert not RAW_WARNING.search(output)
        assert ": 0img" not in output  # no empty progress bar
        assert "Training steps" in output  # the real log is there

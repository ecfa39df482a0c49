"""A run directory written before the modules moved into packages (commit d30e489, see
tests/fixtures/README.md) still evaluates, predicts, exports, explains, lists its checkpoints
and resumes with today's code."""

import logging
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from retina.checkpoints import main as list_checkpoints
from retina.config import ExplainConfig
from retina.evaluation.held_out import evaluate_run
from retina.explanations.overlays import explain_run
from retina.run_dir import CONFIG_FILE, load_run_config
from retina.serving.artifacts import export_run
from retina.serving.unlabeled import predict_scans
from retina.training.loop import train

OLD_RUN = ROOT / "tests" / "fixtures" / "run-d30e489"


@pytest.fixture
def old_run(tmp_path, smoke_run, shared_data):
    """A copy of the old run whose data paths name this session's smoke data (the same
    generator, seed and preprocessing: the same scans), as after moving the data folder."""
    run_dir = tmp_path / "old-run"
    shutil.copytree(OLD_RUN, run_dir)
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    config["data"]["root"] = str(shared_data / "synthetic")
    config["data"]["cache_dir"] = str(shared_data / "cache")
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    return run_dir


def test_the_fixture_is_from_before_the_move():
    config = yaml.safe_load((OLD_RUN / CONFIG_FILE).read_text())
    assert "precision_cache" not in config["train"]  # a key added since


def test_an_old_run_evaluates_predicts_exports_and_explains(old_run, shared_data, tmp_path):
    metrics = evaluate_run(old_run, checkpoint="best", n_resamples=50)
    manifest = pd.read_csv(old_run / "manifest.csv")
    assert metrics["eye_level"]["n"] == (manifest["split"] == "test").sum()
    assert metrics["checkpoint"] == "ckpt-5"

    scans = tmp_path / "scans"
    scans.mkdir()
    for path in sorted((shared_data / "synthetic" / "train_images").glob("*.png"))[:2]:
        shutil.copy(path, scans / path.name)
    predictions = pd.read_csv(predict_scans(old_run, scans))
    assert len(predictions) == 2 and predictions["referable_probability"].between(0, 1).all()

    exported = export_run(old_run, "keras")
    assert (exported / "model.keras").is_file() and (exported / "serving.json").is_file()

    explained = explain_run(ExplainConfig(run_dir=str(old_run), limit=2))
    assert len(pd.read_csv(explained / "explanations.csv")) == 2


def test_an_old_run_lists_its_checkpoints_and_resumes(old_run, capsys, caplog):
    assert list_checkpoints([str(old_run)]) == 0
    assert "ckpt-5" in capsys.readouterr().out
    saved = load_run_config(old_run)  # the run's own settings, as its command gave them
    resumed = replace(saved, train=replace(saved.train, epochs=2))
    with caplog.at_level(logging.INFO, logger="retina.training.loop"):
        train(resumed, old_run)
    assert f"Restored from {old_run / 'latest' / 'ckpt-5'}" in caplog.text
    assert "Training steps 6..10" in caplog.text
    steps = pd.read_csv(old_run / "steps.csv")["step"].tolist()
    assert steps == list(range(1, 11))  # steps 1-5 from before, 6-10 resumed
    assert load_run_config(old_run).train.epochs == 2

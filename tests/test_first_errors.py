"""The errors a new user meets in the first five minutes: one line naming the thing and the
fix, exit status 2, no traceback."""

import shutil

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import run_module
from retina.config import DataConfig, RunConfig
from retina.data.sources import build_manifest
from retina.errors import ConfigError, DataError
from retina.run_dir import load_run_config


def _one_line_error(result) -> str:
    """The error line of a failed entry point; asserts it is alone and untraced."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if "Error:" in line]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def test_an_unknown_group_option_is_named_with_the_options(tmp_path):
    result = run_module("retina.train", "data=aptos", cwd=tmp_path, timeout=60)
    line = _one_line_error(result)
    assert "data=aptos is not an option of data" in line and "'aptos2019'" in line


@pytest.fixture
def run_copy(smoke_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(smoke_run, target)
    return target


def test_a_hostile_config_runs_nothing_and_says_so(run_copy, tmp_path):
    marker = tmp_path / "pwned"
    text = (run_copy / "config.yaml").read_text()
    hostile = f"seed: !!python/object/apply:os.system ['touch {marker}']\n"
    (run_copy / "config.yaml").write_text(hostile + text.replace("seed: 0\n", ""))
    result = run_module("retina.evaluate", f"run_dir={run_copy}", cwd=tmp_path, timeout=120)
    line = _one_line_error(result)
    assert "config.yaml is not a config this program wrote" in line
    assert not marker.exists()


def test_a_missing_checkpoint_lists_the_ones_there_are(run_copy, tmp_path):
    result = run_module(
        "retina.evaluate", f"run_dir={run_copy}", "checkpoint=ckpt-99", cwd=tmp_path, timeout=120
    )
    line = _one_line_error(result)
    assert "no checkpoint 'ckpt-99'" in line and "'ckpt-5'" in line


def test_a_config_naming_python_to_call_is_refused_by_key(tmp_path):
    config = OmegaConf.to_container(OmegaConf.structured(RunConfig()))
    config["model"]["_target_"] = "os.system"
    OmegaConf.save(OmegaConf.create(config), tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match=r"model\._target_='os.system'"):
        load_run_config(tmp_path)


def test_a_folder_without_a_run_says_what_a_run_directory_is(tmp_path):
    with pytest.raises(DataError, match="run_dir must be a training run directory"):
        load_run_config(tmp_path / "nothing-here")


def test_a_data_root_that_does_not_exist_is_named(tmp_path):
    cfg = DataConfig(layout="aptos2019", root=str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"data\.root=.*nope is not a folder.*data=aptos2019"):
        build_manifest(cfg)


def test_a_labels_csv_without_the_named_column_lists_its_columns(tmp_path):
    pd.DataFrame({"file": ["a.png"], "grade": [0]}).to_csv(tmp_path / "labels.csv", index=False)
    cfg = DataConfig(layout="folder", root=str(tmp_path), labels_csv="labels.csv")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['path'\].*data\.path_column"):
        build_manifest(cfg)


def _unreadable_folder(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"scan{index}.png").write_bytes(np.random.default_rng(index).bytes(300))
    return folder


def test_training_on_a_folder_of_unreadable_scans_says_none_could_be_read(tmp_path):
    from conftest import smoke_config
    from retina.training.loop import train

    root = _unreadable_folder(tmp_path / "scans")
    pd.DataFrame({"path": [f"scan{i}.png" for i in range(3)], "grade": [0, 2, 4]}).to_csv(
        root / "labels.csv", index=False
    )
    cfg = smoke_config(tmp_path, ["data=folder", "data.labels_csv=labels.csv"], data_root=root)
    with pytest.raises(DataError, match="none of the 3 scans under data.root=.* could be read"):
        train(cfg, tmp_path / "run")


def test_predicting_on_a_folder_of_unreadable_scans_says_none_could_be_read(run_copy, tmp_path):
    from retina.serving.unlabeled import predict_scans

    folder = _unreadable_folder(tmp_path / "unreadable")
    with pytest.raises(DataError, match="no readable scan among 3 file"):
        predict_scans(run_copy, folder, output_dir=tmp_path / "out")

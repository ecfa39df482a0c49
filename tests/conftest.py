"""Shared fixtures: configs composed by real Hydra, data generated on disk per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from retina.config import RunConfig, register_configs
from retina.run_dir import job_folders

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "retina" / "conf"

register_configs()


def compose_config(name: str = "train", overrides: list[str] | None = None):
    """Composes ``conf/<name>.yaml`` exactly as the entry point does."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides or [])


def smoke_config(
    tmp_root: Path, overrides: list[str] | None = None, data_root: Path | None = None
) -> RunConfig:
    """The ``debug=smoke`` run config with its cache (and, unless ``data_root`` is given,
    its data) under ``tmp_root``."""
    cfg = compose_config(
        "train",
        [
            "debug=smoke",
            "train.precision=float32",  # the same numbers on every CPU; override to test others
            f"data.root={data_root or tmp_root / 'synthetic'}",
            f"data.cache_dir={tmp_root / 'cache'}",
            "data.workers=1",
            *(overrides or []),
        ],
    )
    return OmegaConf.to_object(cfg)


@pytest.fixture(autouse=True)
def float32_policy():
    """Every test starts (and leaves the next) under float32, whatever policy an earlier test
    or training run set globally: a model a test builds computes at float32 tolerances
    unless the test names another policy."""
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture(scope="session", autouse=True)
def private_precision_cache(tmp_path_factory):
    """``train.precision=auto``'s measurements go to a folder of this session (tests and the
    processes they start), never to the user's own cache."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """A folder whose ``synthetic/`` and ``cache/`` are reused by the tests that train."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, shared_data) -> Path:
    """One epoch of the smoke preset, trained once per test session and shared by the tests
    that only read a finished run (evaluate, predict, export, structure). Do not modify it:
    copy it first."""
    from retina.training.loop import train

    run_dir = tmp_path_factory.mktemp("smoke-run") / "run"
    train(smoke_config(shared_data, ["train.epochs=1", "train.evaluate_test=false"]), run_dir)
    return run_dir


# The lesion runs' data and training: lesions drawn 4x larger than the default's, 96 px.
LESION_RUN = [
    "data.synthetic.n_patients=100",
    "data.synthetic.image_height=160",
    "data.synthetic.lesion_scale=4",
    "preprocess.image_size=96",
    "model.head=referable",
    "train.epochs=10",
    "train.batch_size=8",
    "train.evaluate_test=false",
]


@pytest.fixture(scope="session")
def lesion_run(tmp_path_factory) -> Path:
    """A run briefly trained on lesions drawn 4x larger than the default's, at 96 px with two
    conv blocks (a 12x12 last feature map), for the explanation sanity checks, the failure
    gallery and report.html; its test split evaluated. Do not modify it: copy it first."""
    from retina.evaluation.held_out import evaluate_run
    from retina.training.loop import train

    tmp = tmp_path_factory.mktemp("lesions")
    lesions = [*LESION_RUN, "model.widths=[16,32]"]
    train(smoke_config(tmp, lesions), tmp / "run")
    evaluate_run(tmp / "run", checkpoint="best", n_resamples=200)
    return tmp / "run"


def run_module(
    module: str, *args: str, cwd: Path, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python -m <module> args`` as a user would; output captured as text."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sweep_args(shared_data, sweep_dir, *extra, epochs: int = 4) -> list[str]:
    """``-m`` on the smoke preset's shared data: ``epochs``, a checkpoint every step."""
    return [
        "-m",
        "debug=smoke",
        "train.precision=float32",
        f"data.root={shared_data / 'synthetic'}",
        f"data.cache_dir={shared_data / 'cache'}",
        f"hydra.sweep.dir={sweep_dir}",
        "train.evaluate_test=false",
        f"train.epochs={epochs}",
        "checkpoint.every_steps=1",
        *extra,
    ]


def launch_order(sweep_dir):
    """Job folders in the order the launcher ran them (their job number)."""
    found = {}
    for job in job_folders(sweep_dir):
        hydra_cfg = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())
        found[hydra_cfg["hydra"]["job"]["num"]] = job
    return [found[n] for n in sorted(found)]


def steps_written(job) -> int:
    """Rows of a run's ``steps.csv``: the steps it trained so far."""
    path = job / "steps.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0

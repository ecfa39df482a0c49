"""The package installs anywhere: a wheel installed apart from the checkout trains and
evaluates from an empty folder, and every package imported at run time is declared."""

import os
import shutil
import subprocess
import sys

from conftest import ROOT


def _run(command, cwd, env=None, timeout=600):
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_every_imported_package_is_declared():
    """deptry reads every import of retina/ and scripts/ against pyproject.toml."""
    result = _run([sys.executable, "-m", "deptry", "."], cwd=ROOT)
    assert "No dependency issues found" in result.stdout + result.stderr


FIND_SWEEPER = """
import importlib
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
names = [p.__module__ for p in Plugins.instance().discover(Sweeper)]
print("found" if "{0}" in names else "missing", importlib.import_module("{0}").__file__)
"""


def test_a_wheel_installed_apart_from_the_checkout_trains_and_evaluates(tmp_path):
    source = tmp_path / "source"  # a copy: building leaves build/ and egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("retina", "hydra_plugins"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "wheels"), str(source)], tmp_path)
    wheel = next((tmp_path / "wheels").glob("retina-*.whl"))
    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = _run([sys.executable, "-c", "import retina; print(retina.__file__)"], empty, env)
    assert where.stdout.strip().startswith(str(site))
    sweeper = "hydra_plugins.retina_optuna_sweeper.sweeper"  # the Optuna sweeper, found by Hydra
    found = _run([sys.executable, "-c", FIND_SWEEPER.format(sweeper)], empty, env).stdout.split()
    assert found[0] == "found" and found[1].startswith(str(site)), found
    train = [sys.executable, "-m", "retina.train", "debug=smoke", "train.epochs=1"]
    _run([*train, "train.evaluate_test=false", "hydra.run.dir=run"], empty, env)
    assert (empty / "data" / "synthetic-smoke" / "train.csv").is_file()  # relative to here
    _run([sys.executable, "-m", "retina.evaluate", "run_dir=run"], empty, env)
    assert (empty / "run" / "eval" / "ckpt-5-test" / "metrics.json").is_file()

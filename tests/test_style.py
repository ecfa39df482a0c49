"""The house style is checked, not hoped for: ruff lint and format over the project."""

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff(command):
    paths = ["retina", "tests", "scripts"]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""Folder names TensorFlow can read checkpoints back from.

TensorFlow's checkpoint reader takes its path as a glob pattern: a run saved under a folder
named ``model.widths=[8,16]`` (a sweep over a list-valued key) could never be read back.
"""

from __future__ import annotations

from pathlib import Path

from retina.errors import ConfigError

GLOB_CHARACTERS = "[]*?\\"
_GLOB_FREE = str.maketrans({"[": "(", "]": ")", "*": "+", "?": "_", "\\": "_"})


def job_folder_name(overrides: str) -> str:
    """A sweep job's folder name from its overrides, with glob characters replaced
    (``model.widths=[8,16]`` -> ``model.widths=(8,16)``); the ``retina.job_folder``
    resolver of ``hydra.sweep.subdir``."""
    return overrides.translate(_GLOB_FREE)


def check_run_dir(run_dir: Path) -> None:
    """A run directory TensorFlow can read checkpoints back from: no glob characters."""
    found = sorted(set(GLOB_CHARACTERS) & set(str(run_dir)))
    if found:
        raise ConfigError(
            f"the run directory {run_dir} contains {' '.join(found)}, which TensorFlow's "
            "checkpoint reader takes as a pattern: checkpoints saved there could not be read "
            "back. Choose a folder name without them (hydra.run.dir=...)."
        )


ENSEMBLE_EVAL_DIR = "ensemble-eval"


def ensemble_output_dir(output_dir: str, sweep_dir: str, members) -> str:
    """Where an ensemble's evaluation goes: ``ensemble.output_dir``, else
    ``<sweep_dir>/ensemble-eval``, else beside the first member; "" for no ensemble."""
    if output_dir:
        return output_dir
    if sweep_dir:
        return str(Path(sweep_dir) / ENSEMBLE_EVAL_DIR)
    return str(Path(members[0]).parent / ENSEMBLE_EVAL_DIR) if members else ""


def evaluation_log_dir(run_dir: str, output_dir: str, sweep_dir: str, members) -> str:
    """``hydra.run.dir`` of ``retina.evaluate``: the ensemble's folder, else <run_dir>/eval."""
    return ensemble_output_dir(output_dir, sweep_dir, members) or str(Path(run_dir) / "eval")

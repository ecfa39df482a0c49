"""The run directory: every file name in it, its config, its status and its logs.

Layout of ``<run_dir>/`` (written by ``python -m retina.train``)::

    config.yaml          the resolved config; evaluate/predict/export rebuild the model from it
    manifest.csv         one row per usable scan and its split
    bad_inputs.csv       scans left out, with the reason (appended)
    gradability.csv      scans that look ungradable (kept)
    ungradable_scans.csv scans the graders found ungradable, with a split (the quality gate's)
    history.csv          one row per epoch (appended)
    steps.csv            one row per step (appended, kept consistent with the checkpoint)
    status.json          how the latest launch ended
    train.log            Hydra's log; worker<i>.log for the other workers of a cluster
    .lock                held while a training process owns the folder
    latest/ best/        checkpoints (see retina.checkpoint); quarantine/: damaged ones
    tensorboard/         TensorBoard event files
    eval/<ckpt>-<set>/   metrics.json, predictions.csv, plots, report.md, report.html,
                         gallery/ (an ensemble's folder: members.json too)
    referral.json        the referral policy evaluate split=val chose (retina.uncertainty.referral)
    predict/             predictions.csv, unreadable.csv, overlays/
    export/<ckpt>-<fmt>/ saved_model/ or model.keras, serving.json, model_card.md
    explain/<ckpt>-<set>/  overlay PNGs, explanations.csv, sanity_checks.json

and of a sweep folder (``python -m retina.train -m``): one job folder per job (with
``.hydra/overrides.yaml``), summary.csv/.md/.png, summary_groups.csv, paired.md.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from retina.config import RunConfig, refuse_instantiate_keys, to_typed
from retina.errors import DataError
from retina.files import read_json, write_atomically, write_json

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.csv"
BAD_INPUTS_FILE = "bad_inputs.csv"
GRADABILITY_FILE = "gradability.csv"
UNGRADABLE_SCANS_FILE = "ungradable_scans.csv"
HISTORY_FILE = "history.csv"
STEPS_FILE = "steps.csv"
STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
LATEST_DIR, BEST_DIR, QUARANTINE_DIR = "latest", "best", "quarantine"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR, PREDICT_DIR, EXPORT_DIR = "eval", "predict", "export"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
UNREADABLE_FILE = "unreadable.csv"
REPORT_FILE = "report.md"
REPORT_HTML_FILE = "report.html"
GALLERY_DIR = "gallery"
MEMBERS_FILE = "members.json"  # an ensemble evaluation's member runs
MODEL_CARD_FILE = "model_card.md"
EXPLAIN_DIR, OVERLAYS_DIR = "explain", "overlays"
EXPLANATIONS_FILE, SANITY_FILE = "explanations.csv", "sanity_checks.json"
SERVING_FILE = "serving.json"
REFERRAL_FILE = "referral.json"  # the uncertainty threshold chosen on validation
KERAS_MODEL_FILE, SAVED_MODEL_DIR = "model.keras", "saved_model"
STEP_COLUMNS = ["step", "loss", "accuracy", "skipped"]
# A sweep folder's summaries (retina.evaluation.summaries, aggregation, comparison).
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")
GROUPS_FILE = "summary_groups.csv"
COMPARISON_FILE = "paired.md"
# What Hydra writes into each run and sweep job: a job's overrides name it.
HYDRA_OVERRIDES = Path(".hydra", "overrides.yaml")
HYDRA_SETTINGS = Path(".hydra", "hydra.yaml")

# Keys that moved: a config.yaml written before the move is read with them in their new
# place; None: the key is gone (what it set is decided elsewhere now) and is dropped.
MOVED_KEYS = {
    "train.referable_threshold": "operating_points.referable_threshold",
    "train.target_sensitivity": "operating_points.target_sensitivity",
    "train.target_specificity": "operating_points.target_specificity",
    "data.synthetic.jpeg_fraction": None,  # file formats follow each site's camera
    "data.synthetic.dicom_fraction": None,
}
# Values that were renamed: a config.yaml written before reads with the new name.
RENAMED_VALUES = {"model.head": {"grades": "softmax"}}


def worker_log_file(index: int) -> str:
    return f"worker{index}.log"


def evaluation_dir(run_dir: str | Path, checkpoint: str, dataset: str) -> Path:
    """``<run_dir>/eval/<checkpoint>-<data set>``."""
    return Path(run_dir) / EVAL_DIR / f"{checkpoint}-{dataset}"


# ----------------------------------------------------------------------------- config


def save_run_config(cfg: RunConfig, run_dir: str | Path) -> None:
    write_atomically(Path(run_dir) / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def load_run_config(path: str | Path) -> RunConfig:
    """A run's saved config (``<run_dir>`` or its ``config.yaml``) as a validated
    ``RunConfig``, with keys from older versions moved to where they live now."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / CONFIG_FILE
    if not path.is_file():
        raise DataError(
            f"{path} not found: run_dir must be a training run directory (the folder "
            "python -m retina.train wrote, with config.yaml and latest/ in it)."
        )
    try:
        saved = OmegaConf.load(path)
        refuse_instantiate_keys(OmegaConf.to_container(saved))
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), migrate_moved_keys(saved))
        return to_typed(merged)
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as error:
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise DataError(
            f"{path} is not a config this program wrote ({type(error).__name__}: "
            f"{first_line}); nothing in it was run. Restore the run's config.yaml, or retrain."
        ) from None


def migrate_moved_keys(saved):
    """Moves every ``MOVED_KEYS`` entry found in ``saved`` (an OmegaConf node) in place and
    renames the ``RENAMED_VALUES``."""
    for key, names in RENAMED_VALUES.items():
        value = OmegaConf.select(saved, key, default=None)
        if value in names:
            OmegaConf.update(saved, key, names[value])
    for old, new in MOVED_KEYS.items():
        value = OmegaConf.select(saved, old, default=None)
        if value is None:
            continue
        parent, leaf = old.rsplit(".", 1)
        del OmegaConf.select(saved, parent)[leaf]
        if new is not None and OmegaConf.select(saved, new, default=None) is None:
            OmegaConf.update(saved, new, value, force_add=True)
    return saved


# ----------------------------------------------------------------------------- status


def write_status(run_dir: str | Path, **fields) -> None:
    """``status.json``: how the latest launch of this run ended (read by sweep summaries)."""
    write_json(Path(run_dir) / STATUS_FILE, fields)


def read_status(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / STATUS_FILE)


# ----------------------------------------------------------------------------- logs


class StepLog:
    """``steps.csv``: one row per training step (step, loss, accuracy, skipped), kept consistent
    with the checkpoint: rows past the restored step are dropped on resume. With ``path``
    None (a worker that does not write the run directory) it keeps nothing."""

    def __init__(self, path: Path | None, restored_step: int):
        self.path = path
        self._handle = None
        self.truncate(restored_step)

    def truncate(self, last_step: int) -> None:
        self.close()
        if self.path is None:
            return
        rows = []
        if self.path.exists():
            with open(self.path, newline="") as handle:
                rows = [r for r in csv.reader(handle) if r and r[0] != "step"]
            rows = [r for r in rows if int(r[0]) <= last_step]
        lines = [",".join(row) for row in [STEP_COLUMNS, *rows]]
        write_atomically(self.path, "\n".join(lines) + "\n", durable=False)
        # Line-buffered: each row reaches the file as it is written (a SIGKILL loses none),
        # without opening the file on every training step.
        self._handle = open(self.path, "a", buffering=1)

    def write(self, step: int, loss: float, accuracy: float, skipped: bool = False) -> None:
        if self._handle is not None:
            self._handle.write(f"{step},{loss!r},{accuracy!r},{int(skipped)}\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def append_history(run_dir: str | Path, row: dict) -> None:
    """One row of ``history.csv`` (header first when the file is new); finite floats
    rounded to 6 decimals."""
    path = Path(run_dir) / HISTORY_FILE
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(
            {
                k: round(v, 6) if isinstance(v, float) and math.isfinite(v) else v
                for k, v in row.items()
            }
        )


def read_history(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / HISTORY_FILE)


def read_manifest(run_dir: str | Path, name: str = MANIFEST_FILE) -> pd.DataFrame:
    """The run's ``manifest.csv`` (or another table of manifest rows it saved, such as
    ``ungradable_scans.csv``), ids as written (strings), grades as integers."""
    table = pd.read_csv(Path(run_dir) / name, dtype=str, keep_default_na=False)
    return table.astype({"grade": int})


def job_folders(sweep_dir: str | Path) -> list[Path]:
    """The job folders of a sweep (those with ``.hydra/overrides.yaml``), sorted.

    Walked with ``os.walk``, which skips a folder that vanishes while it looks (TensorFlow's
    temporary checkpoint folders come and go while other jobs train), and not descending
    into a job folder once found."""
    found = []
    for folder, subfolders, _ in os.walk(sweep_dir):
        if (Path(folder) / HYDRA_OVERRIDES).is_file():
            found.append(Path(folder))
            subfolders.clear()
    return sorted(found)

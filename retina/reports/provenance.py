"""Where a model and its data came from, as the reporting checklists ask (TRIPOD+AI items on
data flow, reference standard and reproducibility; CLAIM's data and ground-truth items):
``study_facts(run_dir, cfg, checkpoint)`` reads them from the run folder alone.

Nothing here carries a source path or a patient identifier: the data set is named by its
layout, scans by counts, the checkpoint and manifest by hashes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

from retina.checkpoint.files import library_versions, read_sidecar
from retina.config import ModelConfig, RunConfig
from retina.data.prepare import reason_counts
from retina.data.synthetic.dataset import SPEC_FILE
from retina.metrics.rates import is_referable
from retina.models import WEIGHTS_IMAGENET, WEIGHTS_NONE
from retina.run_dir import BAD_INPUTS_FILE, GRADABILITY_FILE, read_manifest

SPLIT_ORDER = ("train", "val", "test")


def study_facts(run_dir: Path, cfg: RunConfig, checkpoint: Path) -> dict:
    """JSON-able facts for report.html: data flow, reference standard, split and
    reproducibility."""
    manifest = read_manifest(run_dir)
    return {
        "model": {
            "name": cfg.model.name,
            "head": cfg.model.head,
            "image_size": cfg.preprocess.image_size,
            "initial_weights": initial_weights(cfg.model),
        },
        "data": {
            "layout": cfg.data.layout,
            "sites": list(cfg.data.sites) if cfg.data.layout == "synthetic" else [],
            "splits": split_counts(manifest),
            "left_out": _reasons(run_dir / BAD_INPUTS_FILE),
            "flagged_ungradable": _reasons(run_dir / GRADABILITY_FILE, "gradability"),
            "graders": _graders(cfg),
            "train_label": cfg.data.train_label,
            "split_seed": cfg.data.split_seed,
            "folds": cfg.data.folds,
            "fold": cfg.data.fold,
        },
        "reproducibility": _reproducibility(checkpoint),
    }


def initial_weights(model: ModelConfig) -> dict:
    """Where the backbone's starting weights came from: a file by its name (never its
    folder), the source and licence the config states, and the SHA-256 the run recorded."""
    if model.weights == WEIGHTS_NONE:
        return {"weights": "random initialisation"}
    facts = {
        "weights": model.weights if model.weights == WEIGHTS_IMAGENET else Path(model.weights).name,
        "source": model.weights_source
        or ("ImageNet (keras.applications)" if model.weights == WEIGHTS_IMAGENET else "not stated"),
        "licence": model.weights_licence or "not stated",
    }
    if model.weights_sha256:
        facts["sha256"] = model.weights_sha256
    return facts


def describe_initial_weights(weights: dict) -> str:
    """One line for the reports: 'RETFound_cfp_weights.pth (source; licence ...; SHA-256
    ...)'."""
    if "source" not in weights:
        return weights["weights"]
    digest = f"; SHA-256 {weights['sha256']}" if "sha256" in weights else ""
    return f"{weights['weights']} ({weights['source']}; licence {weights['licence']}{digest})"


def split_counts(manifest: pd.DataFrame) -> list[dict]:
    """Scans, patients, referable scans and prevalence per split."""
    rows = []
    present = [s for s in SPLIT_ORDER if s in set(manifest["split"])]
    for split in present:
        part = manifest[manifest["split"] == split]
        referable = int(is_referable(part["grade"].to_numpy()).sum())
        rows.append(
            {
                "split": split,
                "scans": len(part),
                "patients": int(part["patient"].nunique()),
                "referable": referable,
                "prevalence": referable / len(part) if len(part) else float("nan"),
            }
        )
    return rows


def _reasons(path: Path, column: str = "reason") -> dict[str, int]:
    """How many scans a run's list holds per reason (``reason_counts``: no paths)."""
    if not path.exists():
        return {}
    return reason_counts(pd.read_csv(path, dtype=str, keep_default_na=False)[column])


def _graders(cfg: RunConfig) -> dict:
    """What is known of the grading: the built-in set's record of its three graders."""
    if cfg.data.layout != "synthetic":
        return {}
    spec = Path(cfg.data.root) / SPEC_FILE
    if not spec.exists():
        return {}
    record = json.loads(spec.read_text())
    return {
        "graders": 3,
        "mean_pairwise_quadratic_kappa": record.get("grader_kappa"),
        "ungradable_share_left_out": record.get("ungradable_share"),
    }


def _reproducibility(checkpoint: Path) -> dict:
    sidecar = read_sidecar(checkpoint)
    files = sidecar.get("files", {})
    data = next((digest for name, digest in files.items() if ".data-" in name), "")
    return {
        "code_version": _code_version(sidecar.get("versions", {}).get("retina", "")),
        "config_hash": sidecar.get("config_hash", ""),
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": data,
        "manifest_hash": sidecar.get("manifest_hash", ""),
        "trained_with": sidecar.get("versions", {}),
        "evaluated_with": library_versions(),
    }


def _code_version(version: str) -> str:
    """``retina <version>`` and, run from a git checkout of the project, its commit."""
    package = Path(__file__).parents[1]  # retina/
    if not (package.parent / ".git").exists():  # an installed wheel: the version says it
        return f"retina {version}"
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"retina {version}" + (f" (git {commit})" if commit else "")

"""Several runs scored as one model: ``evaluate_ensemble`` (``uncertainty.method=ensemble``),
including the out-of-fold validation scores a cross-validation ensemble chooses its
referral policy on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from retina.config import DataConfig
from retina.evaluation.gated import with_graders_ungradable
from retina.evaluation.held_out import Options, Scorer, sample_rows, score, scored_rows
from retina.files import write_json
from retina.quality.scoring import load_gate
from retina.run_dir import MEMBERS_FILE
from retina.uncertainty.ensemble import (
    check_same_split,
    fold_groups,
    load_members,
    mean_operating_points,
)


def evaluate_ensemble(
    members: list[Path],
    output_dir: str | Path,
    checkpoint: str = "best",
    data: DataConfig | None = None,
    options: Options | None = None,
) -> dict:
    """Scores the members as one model (their mean probability; operating points: the
    mean of theirs; the first member's quality gate) on the first member's ``split``
    (every member must hold the same scans there) or on ``data``; writes
    ``<output_dir>/<checkpoint>-<data set>/``.

    Cross-validation folds on ``split="val"``: no validation scan is unseen by every
    member, so each fold's validation scans are scored by that fold's members only (the
    out-of-fold predictions, ``val-out-of-fold``), and the referral policy is chosen on them.
    """
    options = options or Options()
    options = replace(options, uncertainty=replace(options.uncertainty, method="ensemble"))
    configs, models, paths = load_members(members, checkpoint)
    folds = fold_groups(members) if options.split == "val" and data is None else None
    if data is None and folds is None:
        check_same_split(members, options.split)
    source = f"the mean of {len(members)} members' thresholds, each chosen on its validation split"
    # The quality gate of the first member: one verdict per scan, an ensemble of one run
    # gating as that run does.
    gate, action = load_gate(models[0], configs[0], paths[0]), str(configs[0].quality.action)
    points = mean_operating_points(paths)
    scorer = Scorer(models, points, checkpoint, source, Path(output_dir), gate, action)
    if folds:
        rows, samples = _out_of_fold_samples(members, configs, folds, scorer, options)
        dataset = "val-out-of-fold"
    else:
        rows, dataset = scored_rows(configs[0], members[0], options.split, data)
        if data is None:
            rows = with_graders_ungradable(configs[0], members[0], options.split, rows)
        samples = None
    out_dir = Path(output_dir) / f"{checkpoint}-{dataset}"
    metrics = score(scorer, rows, dataset, out_dir, options, samples=samples)
    write_json(out_dir / MEMBERS_FILE, {"members": [str(m) for m in members]})
    return metrics


def _out_of_fold_samples(members, configs, folds, scorer: Scorer, options: Options):
    """(each fold's validation rows, (members per fold, scans, classes)): every scan
    sampled by the members that held it out."""
    parts = []
    for fold in folds:
        rows, _ = scored_rows(configs[fold[0]], members[fold[0]], "val", None)
        fold_models = [scorer.models[i] for i in fold]
        parts.append((rows, sample_rows(fold_models, rows, "ensemble", options)))
    rows = pd.concat([r for r, _ in parts], ignore_index=True)
    return rows, np.concatenate([s for _, s in parts], axis=1)

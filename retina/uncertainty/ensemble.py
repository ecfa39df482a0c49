"""Several trained runs scored as one model: ``uncertainty.method=ensemble`` with
``ensemble.members=[<run>, ...]`` or ``ensemble.sweep_dir=<sweep>`` (its finished jobs,
e.g. the seeds or folds of one configuration). The members' mean probability is the
prediction, their disagreement the epistemic uncertainty."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from retina.checkpoint.read import read_operating_points
from retina.errors import ConfigError
from retina.inference.restore import load_run_model
from retina.run_dir import CONFIG_FILE, load_run_config, read_manifest, read_status


def ensemble_members(members: list[str], sweep_dir: str) -> list[Path]:
    """The member run folders: those listed, then the finished jobs of ``sweep_dir``."""
    from retina.run_dir import job_folders

    found = [Path(m) for m in members]
    if sweep_dir:
        jobs = job_folders(sweep_dir)
        found += [j for j in jobs if read_status(j).get("status") == "finished"]
    if not found:
        raise ConfigError(
            "uncertainty.method=ensemble needs its members: ensemble.members=[<run>,...] or "
            "ensemble.sweep_dir=<sweep folder with finished jobs>."
        )
    for member in found:
        if not (member / CONFIG_FILE).is_file():
            raise ConfigError(f"ensemble member {member} is not a run folder (no {CONFIG_FILE}).")
    return found


def load_members(members: list[Path], checkpoint: str) -> tuple[list, list, list[Path]]:
    """(configs, models, checkpoint paths); refused unless every member preprocesses scans
    exactly as the first one (the cached scans are shared)."""
    first = asdict(load_run_config(members[0]).preprocess)
    for member in members[1:]:
        theirs = asdict(load_run_config(member).preprocess)
        differing = {k: (first[k], v) for k, v in theirs.items() if first[k] != v}
        if differing:
            keys = ", ".join(f"preprocess.{k}: {a!r} vs {b!r}" for k, (a, b) in differing.items())
            raise ConfigError(
                f"ensemble member {member} preprocesses differently from {members[0]} ({keys}); "
                "members must share the preprocessing."
            )
    loaded = [load_run_model(member, checkpoint) for member in members]
    return [c for c, _, _ in loaded], [m for _, m, _ in loaded], [p for _, _, p in loaded]


def mean_operating_points(paths: list[Path]) -> dict:
    """Each operating point's threshold averaged over the members' checkpoints."""
    points = [read_operating_points(path) for path in paths]
    return {name: float(np.mean([p[name] for p in points])) for name in points[0]}


def split_groups(members: list[Path], split: str) -> dict[tuple, list[int]]:
    """The members (indices) grouped by the scans they hold in ``split``, keyed by those
    scans' ids: one group when every member holds the same scans."""
    groups: dict[tuple, list[int]] = {}
    for index, member in enumerate(members):
        manifest = read_manifest(member)
        scans = tuple(sorted(manifest.loc[manifest["split"] == split, "scan_id"]))
        groups.setdefault(scans, []).append(index)
    return groups


def check_same_split(members: list[Path], split: str) -> None:
    """Every member holds the same scans in ``split`` (the same data and split seed)."""
    groups = split_groups(members, split)
    if len(groups) > 1:
        other = members[list(groups.values())[1][0]]
        raise ConfigError(
            f"ensemble member {other} has other scans in split {split!r} than "
            f"{members[0]} (another data set, data.split_seed or data.fold)."
        )


def fold_groups(members: list[Path]) -> list[list[int]] | None:
    """Cross-validation members grouped by fold (the members that share a validation
    split, e.g. its seeds), or None when every member has the same validation scans.

    Refused unless each validation scan is held out by exactly one group and every group
    has as many members: out-of-fold predictions then sample each scan equally often.
    """
    groups = split_groups(members, "val")
    if len(groups) == 1:
        return None
    scans = [set(ids) for ids in groups]
    sizes = sorted({len(g) for g in groups.values()})
    if sum(map(len, scans)) != len(set().union(*scans)) or len(sizes) > 1:
        raise ConfigError(
            f"the members' validation splits are not the folds of one cross-validation "
            f"(overlapping scans, or folds with {sizes} members): choose a referral policy "
            "on one member (run_dir=<member> split=val) or list members that share "
            "data.folds, data.split_seed and their seeds."
        )
    return list(groups.values())

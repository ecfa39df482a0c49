"""The quality gate in an evaluation: the graders' ungradable scans of the split joined to
the scored rows, which scans the metrics are measured on, and what metrics.json says of
the gate."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from retina.config import RunConfig
from retina.data.prepare import prepare_ungradable
from retina.quality.summary import GRADERS_COLUMN, gate_summary

log = logging.getLogger(__name__)


def with_graders_ungradable(
    cfg: RunConfig, run_dir: Path, split: str, rows: pd.DataFrame
) -> pd.DataFrame:
    """``rows`` (the graded scans of ``split``) and the graders' ungradable scans of that
    split, ``graders_gradable`` telling them apart (the latter never enter a metric of
    the grade)."""
    rows = rows.assign(**{GRADERS_COLUMN: 1})
    extra = prepare_ungradable(cfg, run_dir, (split,))
    if extra.empty:
        return rows.reset_index(drop=True)
    log.info("%d scans of %s the graders found ungradable: through the gate.", len(extra), split)
    joined = pd.concat([rows, extra.assign(**{GRADERS_COLUMN: 0})], ignore_index=True)
    return joined.astype({"grade": int})


def measured(rows: pd.DataFrame, verdicts: pd.DataFrame) -> pd.Series:
    """The scans the grade's metrics are measured on: let through by the gate and graded by
    the graders."""
    graders = rows[GRADERS_COLUMN] if GRADERS_COLUMN in rows else pd.Series(1, rows.index)
    return (verdicts["quality"].to_numpy() == "gradable") & (graders.to_numpy() == 1)


def quality_record(scorer, rows, verdicts, options) -> dict:
    """``metrics.json``'s ``quality_gate``: ``retina.quality.summary.gate_summary`` of the
    scans and their verdicts."""
    columns = ["scan_id", "patient", *(c for c in ("site", GRADERS_COLUMN) if c in rows)]
    table = pd.concat([rows[columns].reset_index(drop=True), verdicts], axis=1)
    return gate_summary(table, scorer.action, scorer.gate.fitted, options.n_resamples, options.seed)

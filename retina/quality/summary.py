"""What an evaluation says of the gate: how many scans it let through and withheld (per
verdict, reason and site), and, where the graders' gradable label is known, how well the
learnt score and the rules find the scans the graders could not grade."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.metrics.bootstrap import bootstrap_auc_interval
from retina.metrics.intervals import rate_with_interval
from retina.metrics.rates import roc_auc, sensitivity, specificity
from retina.quality.gate import BLURRED, DARK, NO_FIELD, VERDICTS

GRADERS_COLUMN = "graders_gradable"  # 1 graded by the graders, 0 found ungradable
RULE_BITS = NO_FIELD | DARK | BLURRED
EXAMPLES = 5  # withheld scans named in the report, per verdict


def gate_summary(
    table: pd.DataFrame, action: str, fitted: bool, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """The gate's record of one evaluation.

    Args:
        table: one row per scan with ``scan_id``, ``patient``, the verdict columns
            (``retina.quality.scoring.QUALITY_COLUMNS``, ``quality_flags``), and where known
            ``site`` and ``graders_gradable``.
        action: ``quality.action``, the withheld scans' decision.
        fitted: whether the checkpoint holds a fitted gate (else the rules alone).
    """
    held = table["quality"] != "gradable"
    graders = table[GRADERS_COLUMN] if GRADERS_COLUMN in table else pd.Series(1, table.index)
    gradable = graders == 1
    summary = {
        "action": action,
        "fitted": fitted,
        "scans": int(len(table)),
        "verdicts": {v: int((table["quality"] == v).sum()) for v in VERDICTS},
        "withheld": int(held.sum()),
        "withheld_share": _share(held.sum(), len(table)),
        "gradable_withheld": int((held & gradable).sum()),
        "gradable_withheld_share": _share((held & gradable).sum(), gradable.sum()),
        "reasons": _reason_counts(table.loc[held, "quality_reasons"]),
        "examples": _examples(table),
        "per_site": _per_site(table, held, gradable),
    }
    if (~gradable).any():
        summary["against_graders"] = against_graders(table, gradable, n_resamples, seed)
    return summary


def _share(count, total) -> float:
    return float(count) / float(total) if total else float("nan")


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    split = reasons.fillna("").str.split("; ").explode()
    return split[split != ""].value_counts().sort_index().to_dict()


def _examples(table: pd.DataFrame) -> dict[str, list[dict]]:
    """A few withheld scans of each verdict: id and reasons."""
    examples = {}
    for verdict in VERDICTS[1:]:
        rows = table[table["quality"] == verdict].head(EXAMPLES)
        examples[verdict] = [
            {"scan_id": str(r["scan_id"]), "reasons": str(r["quality_reasons"] or "")}
            for _, r in rows.iterrows()
        ]
    return examples


def _per_site(table: pd.DataFrame, held: pd.Series, gradable: pd.Series) -> dict:
    """Scans, withheld and the share withheld of each site (the graders' gradable scans)."""
    if "site" not in table:
        return {}
    sites = {}
    for site, rows in table.groupby("site"):
        kept = gradable[rows.index]
        sites[str(site)] = {
            "scans": int(len(rows)),
            "withheld": int(held[rows.index].sum()),
            "gradable_withheld_share": _share((held[rows.index] & kept).sum(), kept.sum()),
        }
    return sites


def against_graders(table: pd.DataFrame, gradable: pd.Series, n_resamples: int, seed: int):
    """The learnt score's AUC (with a patient-level bootstrap CI) for the graders'
    gradable label, and the sensitivity and specificity (Wilson CIs) of the rules and of
    the whole gate for finding the scans the graders could not grade."""
    ungradable = (~gradable).to_numpy()
    scores = table["quality_score"].to_numpy(dtype=float)
    scored = ~np.isnan(scores)
    record = {"graders_ungradable": int(ungradable.sum()), "graders_gradable": int(gradable.sum())}
    if scored.any():
        label, score = gradable.to_numpy()[scored], scores[scored]
        low, high = bootstrap_auc_interval(
            label, score, table["patient"].to_numpy()[scored], n_resamples, seed
        )
        record["score_auc"] = {"value": roc_auc(label, score), "low": low, "high": high}
    rules = (table["quality_flags"].to_numpy(dtype=int) & RULE_BITS) > 0
    gate = (table["quality"] != "gradable").to_numpy()
    for name, flagged in (("rules", rules), ("gate", gate)):
        record[name] = {
            "sensitivity": _rate(ungradable, flagged, sensitivity, True),
            "specificity": _rate(ungradable, flagged, specificity, False),
        }
    return record


def _rate(ungradable: np.ndarray, flagged: np.ndarray, rate, positives: bool) -> dict:
    """A sensitivity or specificity for the ungradable class, with its Wilson interval."""
    group = ungradable if positives else ~ungradable
    hits = int((flagged[group] if positives else ~flagged[group]).sum())
    return rate_with_interval(rate(ungradable, flagged), hits, int(group.sum()), 0.95)

"""A run's checkpoints, each verified against its sidecar's hashes, as rows and as a table
(``python -m retina.checkpoints <run_dir>``)."""

from __future__ import annotations

from pathlib import Path

from retina.checkpoint.files import complete_prefixes, damage, read_sidecar
from retina.reports.tables import markdown_table
from retina.run_dir import BEST_DIR, LATEST_DIR

COLUMNS = ("folder", "name", "step", "epoch", "auc", "sens", "spec", "kappa", "verifies")
NAN = float("nan")


def checkpoint_rows(run_dir: str | Path) -> list[dict]:
    """One row per checkpoint in ``latest/`` and ``best/``, newest first in each."""
    rows = []
    for folder in (LATEST_DIR, BEST_DIR):
        for prefix in complete_prefixes(Path(run_dir) / folder):
            why = damage(prefix)
            meta = read_sidecar(prefix) if why is None or "sidecar" not in why else {}
            metrics = meta.get("metrics", {})
            rows.append(
                {
                    "folder": folder,
                    "name": prefix.name,
                    "step": meta.get("step", "?"),
                    "epoch": meta.get("epoch", "?"),
                    "auc": metrics.get("referable_auc", NAN),
                    "sens": metrics.get("sensitivity", NAN),
                    "spec": metrics.get("specificity", NAN),
                    "kappa": metrics.get("quadratic_weighted_kappa", NAN),
                    "verifies": "yes" if why is None else f"NO: {why}",
                }
            )
    return rows


def integrity_table(rows: list[dict]) -> str:
    return markdown_table(COLUMNS, [[row[c] for c in COLUMNS] for row in rows])

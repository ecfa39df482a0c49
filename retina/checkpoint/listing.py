"""``python -m retina.checkpoints <run_dir>``: list a run's checkpoints and verify each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retina.checkpoint.files import complete_prefixes, damage, read_sidecar
from retina.markdown import markdown_table
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retina.checkpoints", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a training run directory")
    args = parser.parse_args(argv)
    if not (args.run_dir / LATEST_DIR).is_dir():
        print(
            f"{args.run_dir} has no {LATEST_DIR}/ folder: not a training run directory.",
            file=sys.stderr,
        )
        return 2
    rows = checkpoint_rows(args.run_dir)
    print(markdown_table(COLUMNS, [[row[c] for c in COLUMNS] for row in rows]))
    return 0 if all(row["verifies"] == "yes" for row in rows) else 1

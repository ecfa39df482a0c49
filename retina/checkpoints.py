"""``python -m retina.checkpoints <run_dir>``: list a run's checkpoints and verify each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retina.checkpoint import BEST_DIR, LATEST_DIR, CheckpointFolder, damage, read_sidecar

COLUMNS = ("folder", "name", "step", "epoch", "auc", "sens", "spec", "kappa", "verifies")


def checkpoint_rows(run_dir: str | Path) -> list[dict]:
    """One row per checkpoint in ``latest/`` and ``best/``, newest first in each."""
    rows = []
    for folder in (LATEST_DIR, BEST_DIR):
        for prefix in CheckpointFolder(Path(run_dir) / folder, None, {}).prefixes():
            why = damage(prefix)
            meta = read_sidecar(prefix) if why is None or "sidecar" not in why else {}
            metrics = meta.get("metrics", {})
            rows.append(
                {
                    "folder": folder,
                    "name": prefix.name,
                    "step": meta.get("step", "?"),
                    "epoch": meta.get("epoch", "?"),
                    "auc": metrics.get("referable_auc", float("nan")),
                    "sens": metrics.get("sensitivity", float("nan")),
                    "spec": metrics.get("specificity", float("nan")),
                    "kappa": metrics.get("quadratic_weighted_kappa", float("nan")),
                    "verifies": "yes" if why is None else f"NO: {why}",
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    def cell(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    table = [COLUMNS] + [tuple(cell(row[c]) for c in COLUMNS) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in table
    )


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
    print(format_table(rows))
    return 0 if all(row["verifies"] == "yes" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

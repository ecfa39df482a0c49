"""``python -m retina.checkpoints <run_dir>``: list a run's checkpoints and verify each
(exit status 1 if any fails to verify; ``retina.reports.integrity``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retina.reports.integrity import checkpoint_rows, integrity_table
from retina.run_dir import LATEST_DIR


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
    print(integrity_table(rows))
    return 0 if all(row["verifies"] == "yes" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m retina.sweep <multirun_dir>``: the summaries of a multirun written on demand,
and ``SweepSummary``, the Hydra callback that writes them after every job of
``python -m retina.train -m ...`` (``retina.evaluation.summaries`` does the work).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from retina.evaluation.aggregation import REPEAT_KEYS
from retina.evaluation.summaries import write_summary
from retina.run_dir import COMPARISON_FILE, SUMMARY_FILES, write_status


class SweepSummary(Callback):
    """Hydra callback: records each job's failure and writes the summary after a multirun."""

    def __init__(
        self, metric: str = "val_referable_auc", mode: str = "max", repeat_keys=REPEAT_KEYS
    ):
        self.metric, self.mode, self.repeat_keys = metric, mode, list(repeat_keys)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """Records a failure, then refreshes the summary: it stays current even when the
        sweep is killed or Hydra stops at the end on a failed job."""
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if job_return.status == JobStatus.FAILED:
            error = str(job_return._return_value).strip().splitlines() or [""]
            output_dir = Path(config.hydra.runtime.output_dir)
            name = type(job_return._return_value).__name__
            state = "pruned" if name == "TrialPruned" else "failed"  # Optuna stopped it early
            write_status(output_dir, status=state, error=f"{name}: {error[0][:300]}")
        if config.hydra.mode == RunMode.MULTIRUN:
            self.write(config)

    def on_multirun_end(self, config, **kwargs) -> None:
        self.write(config)

    def write(self, config) -> pd.DataFrame:
        return write_summary(config.hydra.sweep.dir, self.metric, self.mode, self.repeat_keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarize a retina multirun folder.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="val_referable_auc")
    parser.add_argument("--mode", choices=["max", "min"], default="max")
    parser.add_argument(
        "--repeat-keys",
        nargs="*",
        default=list(REPEAT_KEYS),
        help="override keys whose jobs are repeats of one configuration (default: %(default)s)",
    )
    parser.add_argument(
        "--reference",
        default="",
        help="key=value (e.g. model.head=softmax): paired.md gives each job minus the job "
        "that differs from it in that key alone (default: minus the best job)",
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"{args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    write_summary(args.sweep_dir, args.metric, args.mode, args.repeat_keys, args.reference)
    print((args.sweep_dir / SUMMARY_FILES[1]).read_text())  # summary.md
    if args.reference and (args.sweep_dir / COMPARISON_FILE).exists():
        print((args.sweep_dir / COMPARISON_FILE).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

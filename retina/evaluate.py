"""``python -m retina.evaluate run_dir=<dir> [checkpoint=latest|best|ckpt-N] [split=test]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.cli import exit_on_user_error, run_entry_point
from retina.config import register_configs, to_typed

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    from retina.evaluation import evaluate_run

    options = to_typed(cfg)  # refuses _target_-style keys by name
    metrics = evaluate_run(
        options.run_dir,
        options.checkpoint,
        options.split,
        options.batch_size,
        tta=options.tta,
        n_resamples=options.bootstrap_resamples,
        seed=options.seed,
        data=options.data,
    )
    return metrics["eye_level"]["referable_auc"]["value"]


if __name__ == "__main__":
    run_entry_point(main)

"""``python -m retina.train [overrides]``: train, or resume, one run (``-m`` for sweeps)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from retina.config import register_configs, to_typed
from retina.console import exit_on_user_error, run_entry_point

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    from hydra_plugins.retina_optuna_sweeper.pruning import epoch_reporter
    from retina.training.loop import train  # TensorFlow loads after Hydra parsed the CLI

    run_cfg, hydra_cfg = to_typed(cfg), HydraConfig.get()
    reporter = epoch_reporter(hydra_cfg, run_cfg.checkpoint.best_metric)  # Optuna pruning
    metrics = train(run_cfg, hydra_cfg.runtime.output_dir, epoch_end=reporter)
    return metrics["best"]["value"]  # the sweep objective (Optuna): best validation metric


if __name__ == "__main__":
    run_entry_point(main)

"""``python -m retina.evaluate run_dir=<dir> [checkpoint=latest|best|ckpt-N] [split=test]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.cli import exit_on_user_error
from retina.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    from omegaconf import OmegaConf

    from retina.evaluation import evaluate_run

    metrics = evaluate_run(
        cfg.run_dir,
        cfg.checkpoint,
        cfg.split,
        cfg.batch_size,
        tta=cfg.tta,
        n_resamples=cfg.bootstrap_resamples,
        seed=cfg.seed,
        data=OmegaConf.to_object(cfg.data) if cfg.data is not None else None,
    )
    return metrics["eye_level"]["referable_auc"]["value"]


if __name__ == "__main__":
    main()

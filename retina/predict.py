"""``python -m retina.predict run_dir=<dir> input=<folder|csv|file> [checkpoint=best]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.cli import exit_on_user_error, run_entry_point
from retina.config import register_configs, to_typed

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    options = to_typed(cfg)  # refuses _target_-style keys by name
    from retina.prediction import predict_scans

    predict_scans(
        cfg.run_dir,
        cfg.input,
        cfg.checkpoint,
        cfg.operating_point,
        cfg.output_dir or None,
        cfg.batch_size,
        cfg.tta,
        cfg.paths_in_outputs,
        options.uncertainty,
        options.explain,
    )


if __name__ == "__main__":
    run_entry_point(main)

"""``python -m retina.export run_dir=<dir> format=saved_model|keras [checkpoint=best]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.config import register_configs, to_typed
from retina.console import exit_on_user_error, run_entry_point

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    o = to_typed(cfg)  # refuses _target_-style keys by name
    from retina.serving.artifacts import export_run

    export_run(o.run_dir, fmt=o.format, checkpoint=o.checkpoint, output_dir=o.output_dir or None)


if __name__ == "__main__":
    run_entry_point(main)

"""``python -m retina.explain run_dir=<dir> [input=<folder|csv|scan>] [split=test]
[method=grad_cam|occlusion] [targets=[referable,3]] [sanity_checks=true]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.config import register_configs, to_typed
from retina.console import exit_on_user_error, run_entry_point

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="explain")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    options = to_typed(cfg)  # refuses _target_-style keys by name
    from retina.explanations.overlays import explain_run

    explain_run(options)


if __name__ == "__main__":
    run_entry_point(main)

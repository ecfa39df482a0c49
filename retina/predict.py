"""``python -m retina.predict run_dir=<dir> input=<folder|csv|file> [checkpoint=best]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina.config import register_configs, to_typed
from retina.console import exit_on_user_error, run_entry_point

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    o = to_typed(cfg)  # refuses _target_-style keys by name
    from retina.serving.unlabeled import predict_scans

    predict_scans(
        o.run_dir,
        o.input,
        checkpoint=o.checkpoint,
        operating_point=o.operating_point,
        output_dir=o.output_dir or None,
        batch_size=o.batch_size,
        tta=o.tta,
        paths_in_outputs=o.paths_in_outputs,
        uncertainty=o.uncertainty,
        explain=o.explain,
    )


if __name__ == "__main__":
    run_entry_point(main)

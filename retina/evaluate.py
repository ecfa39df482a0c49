"""``python -m retina.evaluate run_dir=<dir> [checkpoint=latest|best|ckpt-N] [split=test]``;
an ensemble: ``uncertainty.method=ensemble ensemble.sweep_dir=<sweep>`` (or
``ensemble.members=[<run>,...]``)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from retina.config import register_configs, to_typed
from retina.console import exit_on_user_error, run_entry_point

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    from retina.config.folder_names import ensemble_output_dir
    from retina.errors import ConfigError
    from retina.evaluation.ensembles import evaluate_ensemble
    from retina.evaluation.held_out import Options, evaluate_with
    from retina.uncertainty.ensemble import ensemble_members

    o = to_typed(cfg)  # refuses _target_-style keys by name
    options = Options(
        split=o.split,
        batch_size=o.batch_size,
        tta=o.tta,
        n_resamples=o.bootstrap_resamples,
        seed=o.seed,
        uncertainty=o.uncertainty,
        subgroups=tuple(o.subgroups),
        explain=o.explain,
    )
    if o.uncertainty.method == "ensemble":
        ensemble = o.ensemble
        members = ensemble_members(ensemble.members, ensemble.sweep_dir)
        output_dir = ensemble_output_dir(ensemble.output_dir, ensemble.sweep_dir, ensemble.members)
        metrics = evaluate_ensemble(members, output_dir, o.checkpoint, o.data, options)
    elif not o.run_dir:
        raise ConfigError(
            "run_dir=<training run folder> is required (or an ensemble: "
            "uncertainty.method=ensemble ensemble.sweep_dir=<sweep>)."
        )
    else:
        metrics = evaluate_with(Path(o.run_dir), o.checkpoint, options, o.data, o.rebalance)
    return metrics["eye_level"]["referable_auc"]["value"]


if __name__ == "__main__":
    run_entry_point(main)

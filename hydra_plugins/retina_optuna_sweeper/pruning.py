"""The job's side of pruning: each epoch's validation value reported to the job's trial,
and ``optuna.TrialPruned`` raised when the study's pruner says stop (the checkpoint of that
epoch is saved first; the sweep summary marks the job ``pruned``)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def epoch_reporter(hydra_config, metric: str):
    """A callable ``(epoch, metrics)`` for a job of an Optuna sweep with a pruner, else None."""
    sweeper = hydra_config.sweeper
    if sweeper.get("trial") is None or sweeper.get("pruner", "none") == "none":
        return None
    import optuna

    from hydra_plugins.retina_optuna_sweeper.sweeper import pruner, study_storage

    study = optuna.load_study(
        study_name=sweeper.study_name,
        storage=study_storage(sweeper.storage, Path(hydra_config.sweep.dir)),
        pruner=pruner(sweeper.pruner),
    )
    (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == sweeper.trial]
    trial = optuna.trial.Trial(study, frozen._trial_id)  # Optuna's handle for a running trial

    def report(epoch: int, metrics: dict) -> None:
        trial.report(float(metrics[metric]), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"trial {trial.number} pruned after epoch {epoch} ({metric} {metrics[metric]:.4f})"
            )

    return report

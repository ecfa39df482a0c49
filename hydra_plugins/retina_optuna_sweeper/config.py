"""``hydra/sweeper=optuna``: the settings of retina's Optuna sweeper."""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random
    seed: int | None = None  # the sampler's seed (None: a different sequence every study)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.retina_optuna_sweeper.sweeper.OptunaSweeper"
    direction: str = "maximize"  # maximize | minimize: of the value train returns
    study_name: str = "retina"
    storage: str | None = None  # any Optuna storage URL (None: sqlite:///<sweep dir>/optuna.db)
    n_trials: int = 20  # trials in the study in all: a re-launch runs only the rest
    n_jobs: int = 1  # trials launched together (run in parallel by a parallel launcher)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: str = "none"  # none | median | hyperband: stop trials early on validation metrics
    params: dict[str, str] = field(
        default_factory=dict
    )  # key: interval(a,b) | choice(...) | range(...)
    seeds: list[int] = field(default_factory=list)  # train each trial once per seed
    folds: int = 0  # each trial a k-fold cross-validation (data.folds, data.fold)
    trial: int | None = None  # set by the sweeper on each job: the trial it belongs to


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="retina"
)

"""An Optuna study behind Hydra's sweeper interface, with ask and tell.

The study lives in the sweep folder (``optuna.db``), so re-launching the same command
resumes it: finished trials are kept, a trial a killed launch left running is launched
again with its own parameters (its jobs resume from their checkpoints, finished ones have
"Nothing to do"), and new trials are asked for until the study holds ``n_trials``.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
from pathlib import Path

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
STUDY_FILE = "optuna.db"
RESULTS_FILE = "optimization_results.yaml"


class OptunaSweeper(Sweeper):
    def __init__(self, **settings) -> None:
        self.settings = OmegaConf.create(settings)
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list:
        from hydra_plugins.retina_optuna_sweeper.space import search_space

        check_settings(self.settings)
        distributions, fixed = search_space([*_as_overrides(self.settings.params), *arguments])
        study = self._study()
        resumed = _left_running(study)
        if resumed:
            log.info(
                "Resuming trials %s, left running by an earlier launch", [t.number for t in resumed]
            )
        returns, job_number = [], 0
        while batch := self._next_batch(study, resumed, distributions):
            jobs = [
                fixed + _as_overrides(t.params) + r + [f"hydra.sweeper.trial={t.number}"]
                for t in batch
                for r in self._repeats()
            ]
            self.validate_batch_is_legal(jobs)
            results = self.launcher.launch(jobs, initial_job_idx=job_number)
            job_number += len(jobs)
            returns.extend(results)
            per_trial = len(results) // len(batch)
            for index, trial in enumerate(batch):
                tell(study, trial, results[index * per_trial : (index + 1) * per_trial])
            self._write_results(study)
        return returns

    def _study(self):
        import optuna

        storage = study_storage(self.settings.storage, Path(self.config.hydra.sweep.dir))
        study = optuna.create_study(
            study_name=self.settings.study_name,
            storage=storage,
            pruner=pruner(self.settings.pruner),
            direction=self.settings.direction,
            load_if_exists=True,
        )
        # A resumed study must not replay the seeded sampler's first suggestions.
        study.sampler = _sampler(self.settings.sampler, len(study.trials))
        log.info(
            "Optuna %s study %r in %s: %d of %d trials there",
            optuna.__version__,
            study.study_name,
            storage,
            len(study.trials),
            self.settings.n_trials,
        )
        return study

    def _next_batch(self, study, resumed: list, distributions: dict) -> list:
        batch = [resumed.pop(0) for _ in range(min(len(resumed), self.settings.n_jobs))]
        room = self.settings.n_trials - len(study.trials)
        for _ in range(min(self.settings.n_jobs - len(batch), room)):
            batch.append(study.ask(distributions))
        return batch

    def _repeats(self) -> list[list[str]]:
        """The jobs of one trial: one per seed, times one per fold."""
        seeds = [[f"seed={s}"] for s in self.settings.seeds] or [[]]
        k = self.settings.folds
        folds = [[f"data.folds={k}", f"data.fold={i}"] for i in range(k)] or [[]]
        return [s + f for s, f in itertools.product(seeds, folds)]

    def _write_results(self, study) -> None:
        from retina.files import write_atomically

        finished = [t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
        if not finished:
            return
        best = study.best_trial
        results = {
            "name": "optuna",
            "best_trial": best.number,
            "best_params": dict(best.params),
            "best_value": best.value,
            "trials": len(study.trials),
        }
        path = Path(self.config.hydra.sweep.dir) / RESULTS_FILE
        write_atomically(path, OmegaConf.to_yaml(OmegaConf.create(results)))
        log.info("Best trial %d: %s = %.4f", best.number, best.params, best.value)


def check_settings(settings) -> None:
    from retina.config import require_choice
    from retina.errors import ConfigError

    require_choice("hydra.sweeper.direction", settings.direction, ("maximize", "minimize"))
    if settings.pruner != "none" and (settings.seeds or settings.folds):
        raise ConfigError(
            f"hydra.sweeper.pruner={settings.pruner} judges one job per trial; with "
            "hydra.sweeper.seeds or hydra.sweeper.folds a trial has several. Use one, or "
            "hydra.sweeper.pruner=none."
        )
    if settings.n_trials < 1 or settings.n_jobs < 1:
        raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1.")


def study_storage(url: str | None, sweep_dir: Path) -> str:
    """The configured storage URL, else SQLite in the sweep folder."""
    if url:
        return url
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"


def _as_overrides(params) -> list[str]:
    return [f"{key}={value}" for key, value in (params or {}).items()]


def _left_running(study) -> list:
    from optuna.trial import TrialState

    return list(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def tell(study, trial, results) -> None:
    """COMPLETE with the mean of its jobs' values; PRUNED if a job was pruned (with its
    last reported value); FAIL if a job failed."""
    from optuna import TrialPruned
    from optuna.trial import TrialState

    values, errors = [], []
    for result in results:
        try:
            values.append(float(result.return_value))
        except TrialPruned:
            study.tell(trial.number, state=TrialState.PRUNED)
            return
        except Exception as error:  # the job's own error: the summary records it
            errors.append(error)
    finite = [v for v in values if math.isfinite(v)]
    if errors or not finite:
        log.warning("Trial %d failed: %s", trial.number, errors[0] if errors else "no value")
        study.tell(trial.number, state=TrialState.FAIL)
        return
    study.tell(trial.number, statistics.fmean(finite))  # the mean over seeds and folds


def _sampler(settings, trials_so_far: int):
    """The sampler, its seed (if any) moved on by the trials the study already has."""
    import optuna

    from retina.config import require_choice

    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    name = require_choice("hydra.sweeper.sampler.name", settings.name, samplers)
    seed = None if settings.seed is None else settings.seed + trials_so_far
    return samplers[name](seed=seed)


def pruner(name: str):
    import optuna

    from retina.config import require_choice

    pruners = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    return pruners[require_choice("hydra.sweeper.pruner", name, pruners)]()

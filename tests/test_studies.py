"""Studies across runs through the real entry point: k-fold cross-validation with seeds
grouped into one row per configuration, TensorBoard's HParams data, and an Optuna study
that survives a SIGKILL."""

import json
import signal
from dataclasses import replace

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from packaging.version import Version
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util

from conftest import run_module, steps_written, sweep_args
from retina.checkpoint.files import FAULT_ENV
from retina.run_dir import GROUPS_FILE, MANIFEST_FILE, TENSORBOARD_DIR, job_folders


@pytest.fixture(scope="module")
def cv_sweep(shared_data, tmp_path_factory):
    """2 folds x 2 seeds of the smoke preset, one epoch each, test split evaluated."""
    sweep_dir = tmp_path_factory.mktemp("cv") / "sweep"
    folds = ["data.folds=2", "data.fold=0,1", "seed=0,1"]
    args = sweep_args(shared_data, sweep_dir, *folds, epochs=1)
    args += ["checkpoint.every_steps=0", "train.evaluate_test=true"]
    result = run_module("retina.train", *args, cwd=sweep_dir.parent, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def test_cross_validation_jobs_share_the_test_split_and_record_their_fold(cv_sweep):
    jobs = job_folders(cv_sweep)
    assert len(jobs) == 4
    manifests = {
        job.name: pd.read_csv(job / MANIFEST_FILE, dtype=str, keep_default_na=False) for job in jobs
    }
    tests = {name: m[m["split"] == "test"].to_csv(index=False) for name, m in manifests.items()}
    assert len(set(tests.values())) == 1, "the test split differs between jobs"
    for name, manifest in manifests.items():
        fold = name.split("data.fold=")[1].split(",")[0]
        assert set(manifest.loc[manifest["split"] == "val", "fold"]) == {fold}
        assert fold not in set(manifest.loc[manifest["split"] == "train", "fold"])
        assert set(manifest.loc[manifest["split"] == "test", "fold"]) == {""}


def test_grouped_summary_equals_statistics_recomputed_from_the_job_rows(cv_sweep):
    jobs = pd.read_csv(cv_sweep / "summary.csv")
    groups = pd.read_csv(cv_sweep / GROUPS_FILE)
    assert len(jobs) == 4 and len(groups) == 1
    group = groups.iloc[0]
    assert group["jobs"] == 4 and "seed" not in group["configuration"]
    for metric in ("val_referable_auc", "val_quadratic_weighted_kappa", "test_referable_auc"):
        values = jobs[metric].dropna().to_numpy()
        n = len(values)
        assert group[f"{metric}_n"] == n >= 2  # NaNs (a fold with one class) left out
        assert group[f"{metric}_mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert group[f"{metric}_std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
        half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
        assert group[f"{metric}_ci_low"] == pytest.approx(values.mean() - half, abs=1e-12)
        assert group[f"{metric}_ci_high"] == pytest.approx(values.mean() + half, abs=1e-12)
    markdown = (cv_sweep / "summary.md").read_text()
    assert "## Per configuration" in markdown and "## Per job" in markdown
    assert f"{group['val_referable_auc_mean']:.3f} ± " in markdown


def test_tensorboard_hparams_of_each_job_read_back(cv_sweep):
    for job in job_folders(cv_sweep)[:2]:
        events = EventAccumulator(str(job / TENSORBOARD_DIR), size_guidance={"tensors": 0})
        events.Reload()
        content = events.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG)
        start = hparams_metadata.parse_session_start_info_plugin_data(content.plugin_data.content)
        hparams = {
            k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in start.hparams.items()
        }
        fold, seed = int(hparams["data.fold"]), int(hparams["seed"])
        assert f"data.fold={fold}" in job.name and f"seed={seed}" in job.name
        assert hparams["data.folds"] == 2 and hparams["model.name"] == "small_cnn"
        assert "data.root" not in hparams  # paths are left out
        auc = events.Tensors("val/referable_auc")
        assert len(auc) == 1
        history = pd.read_csv(job / "history.csv")
        assert float(tensor_util.make_ndarray(auc[0].tensor_proto)) == pytest.approx(
            history["val_referable_auc"].iloc[-1], abs=1e-6
        )


def _trial_jobs(sweep_dir) -> dict:
    """Job folder of each Optuna trial (the sweeper sets hydra.sweeper.trial on its jobs)."""
    found = {}
    for job in job_folders(sweep_dir):
        hydra_cfg = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())
        found[hydra_cfg["hydra"]["sweeper"]["trial"]] = job
    return found


def test_a_fold_ensemble_chooses_its_referral_policy_on_out_of_fold_scores(cv_sweep, tmp_path):
    """Each validation scan is scored by the members that held it out (its fold's two
    seeds), the policy is chosen on those scores and applies to the whole ensemble."""
    from retina.config import UncertaintyConfig
    from retina.data.prepare import prepare_run_data
    from retina.evaluation.ensembles import evaluate_ensemble
    from retina.evaluation.held_out import Options
    from retina.inference.outputs import predict_probabilities
    from retina.inference.restore import load_run_model
    from retina.uncertainty.ensemble import ensemble_members

    members = ensemble_members([], str(cv_sweep))
    ensemble = UncertaintyConfig(method="ensemble", referral_fraction=0.2)
    options = Options(split="val", n_resamples=20, uncertainty=ensemble, explain=False)
    evaluate_ensemble(members, tmp_path, "latest", options=options)
    scored = pd.read_csv(tmp_path / "latest-val-out-of-fold" / "predictions.csv")
    scored = scored.set_index("scan_id")
    by_fold = {}
    for member in members:
        cfg, model, _ = load_run_model(member, "latest")
        rows = prepare_run_data(cfg, member, splits=("val",))
        fold = member.name.split("data.fold=")[1][0]
        probabilities = predict_probabilities(model, rows["cache_path"].tolist(), 16)
        by_fold.setdefault(fold, []).append(pd.DataFrame(probabilities, index=rows["scan_id"]))
    by_hand = pd.concat([sum(seeds) / len(seeds) for seeds in by_fold.values()])
    assert sorted(scored.index) == sorted(by_hand.index)  # each development scan once
    columns = [f"prob_grade_{g}" for g in range(5)]
    np.testing.assert_allclose(scored.loc[by_hand.index, columns], by_hand, atol=1e-5)
    assert scored["referable_mutual_information"].gt(0).any()  # two seeds per scan
    policy = json.loads((tmp_path / "referral.json").read_text())
    assert policy["samples"] == 4 and policy["method"] == "ensemble"
    assert policy["chosen_on"] == f"{len(scored)} scans of val-out-of-fold"
    tested = evaluate_ensemble(members, tmp_path, "latest", options=replace(options, split="test"))
    assert tested["referral"]["policy"]["threshold"] == policy["threshold"]


@pytest.mark.slow  # 43-47 s (two sweeps, one killed): out of CI's default run for its budget
def test_a_killed_optuna_study_resumes_to_exactly_its_trials(shared_data, tmp_path):
    assert Version(optuna.__version__) >= Version("4")
    sweep_dir = tmp_path / "optuna"
    args = sweep_args(
        shared_data,
        sweep_dir,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=0",
        "optimizer.learning_rate=tag(log,interval(0.0005,0.005))",
        epochs=2,
    )

    killed = run_module("retina.train", *args, cwd=tmp_path, env={FAULT_ENV: "step:3#3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert steps_written(_trial_jobs(sweep_dir)[2]) == 3, "killed at the third trial's third step"

    again = run_module("retina.train", *args, cwd=tmp_path, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="retina", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert len({t.params["optimizer.learning_rate"] for t in study.trials}) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    jobs = _trial_jobs(sweep_dir)
    for number in (0, 1):  # finished before the kill: not launched again
        log = (jobs[number] / "train.log").read_text()
        assert log.count("Initializing from scratch.") == 1 and "Restored from" not in log
    assert "Restored from" in (jobs[2] / "train.log").read_text()
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("job")
    for trial in study.trials:
        job = jobs[trial.number]
        assert f"optimizer.learning_rate={trial.params['optimizer.learning_rate']}" in job.name
        assert trial.value == pytest.approx(summary.loc[job.name, "val_referable_auc"], abs=1e-6)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(study.best_value) and best["trials"] == 4


def _study_with_finished_trials(tmp_path, values_at_epoch_1):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="retina", storage=storage, direction="maximize")
    for value in values_at_epoch_1:
        study.add_trial(optuna.trial.create_trial(value=value, intermediate_values={1: value}))
    return study


def test_a_job_behind_the_median_is_pruned_and_marked_so(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from hydra_plugins.retina_optuna_sweeper.pruning import epoch_reporter
    from hydra_plugins.retina_optuna_sweeper.sweeper import tell
    from retina.run_dir import read_status
    from retina.sweep import SweepSummary

    study = _study_with_finished_trials(tmp_path, [0.80, 0.85, 0.90, 0.95, 0.99])
    ahead, behind = study.ask(), study.ask()
    hydra = {"sweep": {"dir": str(tmp_path)}, "mode": "RUN", "runtime": {"output_dir": ""}}
    sweeper = {"trial": None, "pruner": "median", "study_name": "retina", "storage": None}
    for trial, value in ((ahead, 0.93), (behind, 0.70)):
        config = OmegaConf.create({"hydra": hydra | {"sweeper": sweeper | {"trial": trial.number}}})
        report = epoch_reporter(config.hydra, "referable_auc")
        if trial is ahead:
            report(1, {"referable_auc": value})  # above the median of 0.90: goes on
            continue
        with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1") as pruned:
            report(1, {"referable_auc": value})
    job = tmp_path / "job"
    job.mkdir()
    config.hydra.runtime.output_dir = str(job)
    result = JobReturn(status=JobStatus.FAILED, _return_value=pruned.value)
    SweepSummary().on_job_end(config, result)
    assert read_status(job)["status"] == "pruned"
    tell(study, behind, [result])
    tell(study, ahead, [JobReturn(status=JobStatus.COMPLETED, _return_value=v) for v in (0.9, 0.8)])
    states = {t.number: (t.state.name, t.value) for t in study.trials}
    assert states[behind.number] == ("PRUNED", pytest.approx(0.70))  # its last report
    assert states[ahead.number] == ("COMPLETE", pytest.approx(0.85))  # the mean of its jobs


def test_pruning_is_off_by_default_and_refused_with_several_jobs_per_trial(tmp_path):
    from omegaconf import OmegaConf

    from hydra_plugins.retina_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.retina_optuna_sweeper.pruning import epoch_reporter
    from hydra_plugins.retina_optuna_sweeper.sweeper import check_settings
    from retina.errors import ConfigError

    settings = OmegaConf.structured(OptunaSweeperConf)
    assert settings.pruner == "none"
    sweeper = OmegaConf.to_container(settings) | {"trial": 3}
    config = OmegaConf.create({"sweeper": sweeper, "sweep": {"dir": str(tmp_path)}})
    assert epoch_reporter(config, "referable_auc") is None
    settings.pruner, settings.seeds = "median", [0, 1]
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner=median judges one job per trial"):
        check_settings(settings)

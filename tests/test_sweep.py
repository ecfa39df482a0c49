"""Hydra multirun sweeps through the real entry point: resume after a kill, joblib, Optuna,
and the summary."""

import json
import signal

import numpy as np
import pandas as pd
import pytest

from conftest import (
    launch_order,
    run_module,
    smoke_config,
    steps_written,
    sweep_args,
)
from retina.checkpoint.files import FAULT_ENV
from retina.data.prepare import prepare_run_data
from retina.run_dir import job_folders
from retina.sweep import main as sweep_main

GRID = ["model.dropout=0.1,0.2", "optimizer.learning_rate=0.001,0.003"]


def _jobs(sweep_dir):
    return job_folders(sweep_dir)


@pytest.mark.slow  # 42-69 s; test_studies' killed Optuna sweep resumes through the same job folders
def test_killed_sweep_resumes_its_unfinished_job_and_skips_finished_ones(shared_data, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = sweep_args(shared_data, sweep_dir, *GRID)

    killed = run_module("retina.train", *args, cwd=tmp_path, env={FAULT_ENV: "step:3#3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    third = launch_order(sweep_dir)[2]
    assert steps_written(third) == 3, "killed at the third job's third step"
    assert len(_jobs(sweep_dir)) == 3

    again = run_module("retina.train", *args, cwd=tmp_path, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert len(summary) == 4
    status = dict(zip(summary["job"], summary["status"], strict=True))
    order = launch_order(sweep_dir)
    assert status[order[2].name] == "resumed"
    assert "Restored from" in (order[2] / "train.log").read_text()
    for finished in order[:2]:
        assert status[finished.name] == "finished"
        log = (finished / "train.log").read_text()
        assert log.count("Initializing from scratch.") == 1 and "Nothing to do" in log
    assert status[order[3].name] == "finished"
    assert all(steps_written(job) == 20 for job in order)


@pytest.mark.slow  # 50 s on two cores; the basic launcher's sweeps run in the default tests
def test_joblib_launcher_runs_two_jobs_at_once(shared_data, tmp_path):
    (tmp_path / "prepare").mkdir()
    prepare_run_data(smoke_config(shared_data), tmp_path / "prepare")  # no race to generate
    sweep_dir = tmp_path / "parallel"
    args = sweep_args(
        shared_data, sweep_dir, *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    result = run_module("retina.train", *args, cwd=tmp_path, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert (summary["status"] == "finished").all() and len(summary) == 4
    spans = []
    for job in _jobs(sweep_dir):
        status = json.loads((job / "status.json").read_text())
        spans.append((status["ended"] - status["seconds"], status["ended"]))
    spans.sort()
    overlapping = [b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)]
    assert any(overlapping), spans

    # python -m retina.evaluate -m over two of the jobs; their test metrics join the summary
    jobs = _jobs(sweep_dir)[:2]
    evaluated = run_module(
        "retina.evaluate",
        "-m",
        "run_dir=" + ",".join(f"'{j}'" for j in jobs),  # quoted: job names hold = and ,
        "checkpoint=best",
        "bootstrap_resamples=20",
        f"hydra.sweep.dir={tmp_path / 'evaluations'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert sweep_main([str(sweep_dir)]) == 0
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("job")
    assert summary.loc[[j.name for j in jobs], "test_referable_auc"].notna().all()
    assert summary["test_referable_auc"].isna().sum() == 2


def test_sweep_command_summarizes_on_demand_and_lists_failures(shared_data, tmp_path, capsys):
    sweep_dir = tmp_path / "failing"
    args = sweep_args(shared_data, sweep_dir, "train.batch_size=4,1000")
    result = run_module("retina.train", *args, cwd=tmp_path, timeout=300)
    assert result.returncode != 0  # Hydra reports the failed job after the sweep
    (sweep_dir / "summary.csv").unlink()
    assert sweep_main([str(sweep_dir)]) == 0
    summary = pd.read_csv(sweep_dir / "summary.csv")
    failed = summary[summary["status"] == "failed"]
    assert len(summary) == 2 and len(failed) == 1
    assert failed["error"].iloc[0].startswith("ConfigError: train.batch_size=1000")
    assert (sweep_dir / "summary.png").stat().st_size > 0
    assert "| failed |" in capsys.readouterr().out


def test_jobs_scored_on_the_same_test_scans_get_paired_differences(tmp_path):
    """Two jobs' test predictions on the same 80 scans: paired.md gives each job minus the
    first with the paired bootstrap's interval; a job scored on other scans is left out."""
    from retina.metrics.bootstrap import paired_auc_difference

    rng = np.random.default_rng(3)
    grades = rng.integers(0, 5, 80)
    patients = [f"pt-{i // 2:03d}" for i in range(80)]
    referable = (grades >= 2).astype(float)
    scores = {"a": referable + rng.normal(0, 0.3, 80), "b": referable + rng.normal(0, 1.0, 80)}
    for name, ids in (("a", range(80)), ("b", range(80)), ("c", range(1, 81))):
        job = tmp_path / "sweep" / name
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.name={name}\n")
        folder = job / "eval" / "ckpt-4-test"
        folder.mkdir(parents=True)
        probability = 1 / (1 + np.exp(-scores.get(name, scores["a"])))
        pd.DataFrame(
            {
                "scan_id": [f"s{i:03d}" for i in ids],
                "patient": patients,
                "grade": grades,
                "predicted_grade": np.clip(np.round(grades + rng.normal(0, 0.7, 80)), 0, 4),
                "referable_probability": probability,
            }
        ).to_csv(folder / "predictions.csv", index=False)
    assert sweep_main([str(tmp_path / "sweep")]) == 0
    paired = (tmp_path / "sweep" / "paired.md").read_text()
    difference, low, high = paired_auc_difference(
        grades >= 2, 1 / (1 + np.exp(-scores["b"])), 1 / (1 + np.exp(-scores["a"])), patients
    )
    assert f"| b | 80 | {difference:.3f} [{low:.3f}, {high:.3f}] |" in paired
    assert "| c |" not in paired  # other scans: not paired


def test_a_reference_pairs_each_job_with_its_twin_and_averages_the_repeats(tmp_path):
    """model.head=coral,softmax x seed=0,1: with --reference model.head=softmax each coral
    job is compared with the softmax job of its own seed, and the two seeds averaged."""
    from retina.metrics.bootstrap import paired_auc_difference

    rng = np.random.default_rng(5)
    grades = rng.integers(0, 5, 60)
    patients = [f"pt-{i // 2:03d}" for i in range(60)]
    probabilities = {}
    for head, noise in (("softmax", 1.0), ("coral", 0.4)):
        for seed in (0, 1):
            job = tmp_path / "sweep" / f"model.head={head},seed={seed}"
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "overrides.yaml").write_text(f"- model.head={head}\n- seed={seed}\n")
            score = (grades >= 2) + rng.normal(0, noise, 60)
            probabilities[head, seed] = 1 / (1 + np.exp(-score))
            (job / "eval" / "ckpt-4-test").mkdir(parents=True)
            pd.DataFrame(
                {
                    "scan_id": [f"s{i:03d}" for i in range(60)],
                    "patient": patients,
                    "grade": grades,
                    "predicted_grade": np.clip(np.round(grades + rng.normal(0, noise, 60)), 0, 4),
                    "referable_probability": probabilities[head, seed],
                }
            ).to_csv(job / "eval" / "ckpt-4-test" / "predictions.csv", index=False)
    assert sweep_main([str(tmp_path / "sweep"), "--reference", "model.head=softmax"]) == 0
    paired = (tmp_path / "sweep" / "paired.md").read_text()
    assert "minus its `model.head=softmax` twin" in paired
    differences = []
    for seed in (0, 1):
        difference, low, high = paired_auc_difference(
            grades >= 2, probabilities["coral", seed], probabilities["softmax", seed], patients
        )
        differences.append(difference)
        assert f"| model.head=coral seed={seed} | 60 | {difference:.3f} [{low:.3f}," in paired
    assert "| model.head=softmax seed=0 |" not in paired  # the reference itself
    assert f"| model.head=coral | 2 | {np.mean(differences):.3f} [" in paired

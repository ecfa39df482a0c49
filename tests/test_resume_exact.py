"""Crash-proof, exact resumption through the real entry point.

A run killed with SIGKILL (between steps, or inside a save at each of its stages) and
resumed ends with the same weights, optimizer moments, loss scale, iterator and RNG state
as an uninterrupted run, array for array, under float32, mixed_float16 and mixed_bfloat16;
SIGTERM saves the current step and exits 75. The smoke shapes (48 px, batch 4) keep float16
cheap where a CPU emulates it, and still overflow the initial loss scale, so the scale's
halving and the skipped steps are part of what must resume exactly.
"""

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import run_module

STEPS = 10  # debug=smoke: 2 epochs x 5 steps


def _args(tmp, run_dir, precision, *extra):
    return [
        "debug=smoke",
        f"data.root={tmp / 'synthetic'}",
        f"data.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={run_dir}",
        f"train.precision={precision}",
        "train.deterministic=true",
        "train.evaluate_test=false",
        "checkpoint.every_steps=1",
        *extra,
    ]


def _final_state(run_dir) -> dict:
    """Every tensor of the final checkpoint; the iterator's (a variant tensor, unreadable
    here) shows through the losses in steps.csv, which depend on the batches it yields."""
    reader = tf.train.load_checkpoint(str(run_dir / "latest" / f"ckpt-{STEPS}"))
    return {
        key: reader.get_tensor(key)
        for key, dtype in reader.get_variable_to_dtype_map().items()
        if dtype != tf.variant
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("exact")


@pytest.fixture(scope="module")
def baselines(workspace):
    """Uninterrupted runs, one per precision."""
    found = {}
    for precision in ("float32", "mixed_float16", "mixed_bfloat16"):
        run_dir = workspace / f"baseline-{precision}"
        result = run_module("retina.train", *_args(workspace, run_dir, precision), cwd=workspace)
        assert result.returncode == 0, result.stderr[-3000:]
        found[precision] = run_dir
    skipped = pd.read_csv(found["mixed_float16"] / "steps.csv")["skipped"]
    assert 0 < skipped.sum() < STEPS  # the loss scale was exercised, and steps were applied
    return found


def _slow(*values):
    return pytest.param(*values, marks=pytest.mark.slow)


# Each case is two runs (about 30 s on two cores): the default test run keeps one kill
# between steps, in float32 (and the SIGTERM test below); -m slow runs the kills inside a
# save and under mixed precision (CI's 20-minute budget).
@pytest.mark.parametrize(
    "precision, fault, background",
    [
        ("float32", "step:3", False),  # between steps, mid-epoch
        _slow("float32", "latest_after_data:7", False),  # inside a save: data written, no sidecar
        _slow("float32", "latest_after_sidecar:4", False),  # inside a save: no state file yet
        _slow("float32", "best_after_data:5", False),  # inside the best/ save at an epoch end
        _slow("mixed_float16", "step:7", False),
        _slow("mixed_float16", "latest_after_data:5", False),
        _slow("mixed_bfloat16", "step:6", False),  # mid-epoch 2, after an epoch-end save
        # The same kills with the non-blocking save: the writer thread is killed mid-write.
        _slow("float32", "latest_after_data:7", True),
        _slow("float32", "best_after_data:5", True),
        _slow("mixed_float16", "step:7", True),
    ],
)
def test_killed_run_resumes_bit_exact(workspace, baselines, precision, fault, background):
    """Baselines save synchronously: the background writer must write the same tensors."""
    run_dir = workspace / f"killed-{precision}-{fault.replace(':', '-')}-{background}"
    args = _args(workspace, run_dir, precision, f"checkpoint.background={background}")
    _kill_resume_and_compare(workspace, run_dir, args, fault, baselines[precision])
    assert any("dynamic_scale" in k for k in _final_state(run_dir)) == (
        precision == "mixed_float16"
    )


# About 30 s each on two cores: coral in the default run (its state holds the cut-points and
# link every ordinal head keeps), the other two with -m slow. The quality gate may withhold a
# fifth of the smoke's 5 validation scans, so it is fitted after each epoch too.
GATE = ["quality.max_rejected_fundus=0.2", "quality.max_withheld_gradable=0.2"]


@pytest.mark.parametrize("head", ["coral", _slow("corn"), _slow("regression")])
def test_each_grading_head_and_the_quality_gate_resume_bit_exact(workspace, head):
    """Killed in epoch 2, after the first validation fitted the head's cut-points (and the
    regression link) and the quality gate: the resumed run ends where an uninterrupted one
    does, grading and gate too."""
    baseline, run_dir = workspace / f"baseline-{head}", workspace / f"killed-{head}"
    args = [f"model.head={head}", *GATE]
    result = run_module(
        "retina.train", *_args(workspace, baseline, "float32", *args), cwd=workspace
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _kill_resume_and_compare(
        workspace, run_dir, _args(workspace, run_dir, "float32", *args), "step:7", baseline
    )
    state = _final_state(run_dir)
    assert {"grading/cut_points", "grading/link"} <= {k.split("/.")[0] for k in state}
    assert state["quality/fitted/.ATTRIBUTES/VARIABLE_VALUE"] == 1


# RETFound's recipe on a small ViT, mixup and cutmix on as well: the drop-path masks' seed
# generators, RandAugment, erasing, the batch mixing and the per-block rates must resume too.
VIT = [
    "experiment=retfound_finetune",
    "model=vit",
    "model.width=32",
    "model.depth=2",
    "model.heads=2",
    "schedule.warmup_epochs=1",
    "augment.mixup_alpha=0.8",
    "augment.cutmix_alpha=1.0",
]


@pytest.mark.parametrize("precision", ["float32", _slow("mixed_bfloat16")])
def test_a_vision_transformer_resumes_bit_exact(workspace, precision):
    baseline, run_dir = (
        workspace / f"baseline-vit-{precision}",
        workspace / f"killed-vit-{precision}",
    )
    result = run_module("retina.train", *_args(workspace, baseline, precision, *VIT), cwd=workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    args = _args(workspace, run_dir, precision, *VIT)
    _kill_resume_and_compare(workspace, run_dir, args, "step:7", baseline)
    # The drop-path masks' generators, two blocks x two branches (the head's dropout is 0).
    assert len([key for key in _final_state(run_dir) if key.startswith("rng/")]) == 4


def _kill_resume_and_compare(workspace, run_dir, args, fault: str, baseline) -> None:
    """Runs ``args`` (training ``run_dir``) killed at ``fault``, resumes it, and compares
    the end with ``baseline``: every tensor of the final checkpoint, steps.csv to the bit,
    the best/ checkpoints."""
    killed = run_module("retina.train", *args, cwd=workspace, env={"RETINA_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run_module("retina.train", *args, cwd=workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored from" in resumed.stdout + resumed.stderr

    expected, actual = _final_state(baseline), _final_state(run_dir)
    assert expected.keys() == actual.keys()
    assert any("/seed_generator_state" in k or k.startswith("rng/") for k in actual)
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(actual[key], value, err_msg=key)
        else:
            assert actual[key] == value, key
    baseline_steps = pd.read_csv(baseline / "steps.csv", dtype=str)
    resumed_steps = pd.read_csv(run_dir / "steps.csv", dtype=str)
    pd.testing.assert_frame_equal(resumed_steps, baseline_steps)  # same losses, to the bit
    assert sorted(p.name for p in (run_dir / "best").glob("*.meta.json")) == sorted(
        p.name for p in (baseline / "best").glob("*.meta.json")
    )


def test_sigterm_saves_the_current_step_and_resumes_without_gap_or_repeat(workspace):
    run_dir = workspace / "sigterm"
    args = _args(workspace, run_dir, "float32", "train.epochs=40", "checkpoint.every_steps=0")
    command = [sys.executable, "-m", "retina.train", *args]
    process = subprocess.Popen(
        command, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    steps_file = run_dir / "steps.csv"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if steps_file.exists() and len(steps_file.read_text().splitlines()) > 12:
            break
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == 75, output[-2000:]
    last_step = int(pd.read_csv(steps_file)["step"].iloc[-1])
    assert 12 <= last_step < 200
    assert (run_dir / "latest" / f"ckpt-{last_step}.meta.json").exists()
    assert "SIGTERM received: saved" in output

    resumed = run_module("retina.train", *args, cwd=workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Training steps {last_step + 1}..200" in resumed.stdout + resumed.stderr
    assert pd.read_csv(steps_file)["step"].tolist() == list(range(1, 201))

"""tf.distribute: two real worker processes on loopback (TF_CONFIG, free ports), a mirrored
run on two logical CPU devices, and the pieces they rest on (cluster resolution, per-worker
streams whose checkpointed position moves between worker counts)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import ROOT, run_module, smoke_config
from retina.checkpoint import find_checkpoint, restore_weights, weights_fingerprint
from retina.config import TrainerConfig
from retina.data.pipeline import StreamOptions, make_train_dataset
from retina.errors import EXIT_PREEMPTED, ConfigError
from retina.metrics.summary import clinical_metrics
from retina.models import build_model
from retina.run_dir import load_run_config
from retina.training import precision
from retina.training.distribute import (
    Placement,
    check_batch_size,
    cluster_resolver,
    loopback_tf_configs,
    resolve_strategy,
    task_position,
)
from retina.training.loop import train
from retina.training.precision_cache import cache_file

# The smoke model keeps its dropout (0.2): the masks, too, must match a single process.
COMPARABLE = ["train.deterministic=true", "train.evaluate_test=false"]
FINGERPRINT = re.compile(r"Model weights sha256 ([0-9a-f]{64}) \(worker (\d)\)")
WORKER_TIMEOUT = 240


def _overrides(data: Path, run_dir: Path, extra: list[str], precision="float32") -> list[str]:
    return [
        "debug=smoke",
        f"train.precision={precision}",
        f"data.root={data / 'synthetic'}",
        f"data.cache_dir={data / 'cache'}",
        "data.workers=1",
        f"hydra.run.dir={run_dir}",
        *COMPARABLE,
        *extra,
    ]


def start_workers(
    data: Path, run_dir: Path, extra=(), env_of=lambda index: {}, precision="float32"
) -> list:
    """Two ``python -m retina.train`` workers on 127.0.0.1, as two hosts would run them."""
    tmp = run_dir.parent / f"{run_dir.name}-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    processes = []
    for index, tf_config in enumerate(loopback_tf_configs(2)):
        env = {
            **os.environ,
            "TF_CONFIG": tf_config,
            "TMPDIR": str(tmp),  # where a non-chief's discarded checkpoints go
            "PYTHONUNBUFFERED": "1",
            **env_of(index),
        }
        args = _overrides(data, run_dir, ["trainer.strategy=multi_worker", *extra], precision)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "retina.train", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return processes


def finish(processes: list) -> list[tuple[int, str]]:
    results = []
    for process in processes:
        try:
            output, _ = process.communicate(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append((process.returncode, output))
    return results


def fingerprints(run_dir: Path) -> dict[int, str]:
    """Worker index -> the weights fingerprint it logged at the end of training."""
    found = {}
    for log in [run_dir / "train.log", run_dir / "worker1.log"]:
        for digest, worker in FINGERPRINT.findall(log.read_text()):
            found[int(worker)] = digest
    return found


def losses(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "steps.csv")


@pytest.fixture(scope="module")
def two_workers(shared_data, tmp_path_factory):
    """A finished 2-worker run and a single-process run of the same config."""
    tmp = tmp_path_factory.mktemp("distributed")
    single = tmp / "single"
    train(smoke_config(shared_data, COMPARABLE), single)  # float32, as the workers
    run_dir = tmp / "two"
    results = finish(start_workers(shared_data, run_dir))
    for code, output in results:
        assert code == 0, output[-3000:]
    return dict(run_dir=run_dir, single=single, tmp=tmp, outputs=[o for _, o in results])


def test_both_workers_end_with_bit_identical_weights(two_workers):
    found = fingerprints(two_workers["run_dir"])
    assert set(found) == {0, 1}
    assert found[0] == found[1]


def test_two_workers_train_like_one_process_on_the_same_global_batch(two_workers):
    """Same global batches, loss averaged over the global batch, BatchNorm synchronized:
    the per-step losses equal a single-process run's up to float summation order."""
    two, one = losses(two_workers["run_dir"]), losses(two_workers["single"])
    assert two["step"].tolist() == list(range(1, 11)) == one["step"].tolist()
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_array_equal(two["accuracy"], one["accuracy"])


def test_only_the_chief_writes_and_the_other_worker_cleans_up(two_workers):
    run_dir = two_workers["run_dir"]
    latest = sorted(p.name for p in (run_dir / "latest").iterdir())
    assert "ckpt-10.index" in latest and "ckpt-10.meta.json" in latest
    assert not [name for name in latest if "temp" in name or "worker" in name]
    assert (run_dir / "worker1.log").stat().st_size > 0  # the non-chief's own log
    assert "Initializing from scratch." in (run_dir / "worker1.log").read_text()
    assert not list((run_dir.parent / "two-tmp").iterdir())  # its temporary saves are gone
    assert (
        "multi_worker: 2 replicas on 2 worker(s), this is worker 0 (chief)"
        in (run_dir / "train.log").read_text()
    )


VALIDATED = re.compile(r"Validation: (\d+) of (\d+) scans scored on worker (\d)")


def test_validation_is_sharded_each_scan_scored_once_with_the_single_process_metrics(
    two_workers,
):
    run_dir = two_workers["run_dir"]
    counts = {}
    for log in [run_dir / "train.log", run_dir / "worker1.log"]:
        for scored, total, worker in VALIDATED.findall(log.read_text()):
            counts.setdefault(int(worker), []).append((int(scored), int(total)))
    assert set(counts) == {0, 1} and len(counts[0]) == len(counts[1]) == 2  # two epochs
    for (first, total), (second, _) in zip(counts[0], counts[1], strict=True):
        assert first + second == total == 6 and first and second
    two = pd.read_csv(run_dir / "history.csv")
    one = pd.read_csv(two_workers["single"] / "history.csv")
    columns = [c for c in one if c.startswith(("val_", "threshold_"))]
    np.testing.assert_allclose(two[columns], one[columns], atol=1e-6)


SHARDED_SCORING = """
import json, sys
from retina.config import TrainerConfig
from retina.training.distribute import build_placement
placement = build_placement(TrainerConfig(strategy="multi_worker"))
from retina.checkpoint.read import find_checkpoint, restore_weights
from retina.models import build_model, without_pretrained
from retina.models.grading import grading_of
from retina.run_dir import load_run_config
from retina.training.validation import predict_across_replicas
run, rows, out = sys.argv[1:4]
cfg = load_run_config(run)
with placement.strategy.scope():
    model = build_model(without_pretrained(cfg.model), cfg.preprocess.image_size)
restore_weights(model, find_checkpoint(run))
paths, grades = json.load(open(rows))
_, outputs = predict_across_replicas(placement, model, paths, grades, 4)  # the model's own
probabilities = grading_of(model).probabilities(outputs).numpy()
if placement.is_chief:
    json.dump(probabilities.tolist(), open(out, "w"))
"""


@pytest.mark.slow  # 25 s; the sharded-validation test above covers the sharding rule
def test_sharded_scoring_equals_single_process_scoring(two_workers, tmp_path):
    """One checkpoint scored by two workers, each its share, and by one process."""
    from retina.data.prepare import prepare_run_data
    from retina.inference.outputs import predict_probabilities
    from retina.inference.restore import load_run_model

    run_dir = two_workers["run_dir"]
    cfg, model, _ = load_run_model(run_dir, "latest")
    rows = prepare_run_data(cfg, run_dir, splits=("val",))
    paths, grades = rows["cache_path"].tolist(), rows["grade"].tolist()
    (tmp_path / "rows.json").write_text(json.dumps([paths, grades]))
    script = tmp_path / "score.py"
    script.write_text(SHARDED_SCORING)
    processes = []
    for tf_config in loopback_tf_configs(2):
        env = {**os.environ, "TF_CONFIG": tf_config}
        command = [sys.executable, str(script), str(run_dir), str(tmp_path / "rows.json")]
        processes.append(
            subprocess.Popen(
                [*command, str(tmp_path / "sharded.json")],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for code, output in finish(processes):
        assert code == 0, output[-3000:]
    sharded = np.array(json.loads((tmp_path / "sharded.json").read_text()))
    single = predict_probabilities(model, paths, 4)
    np.testing.assert_allclose(sharded, single, atol=1e-6)
    assert clinical_metrics(grades, sharded) == clinical_metrics(grades, single)


def test_a_single_process_restores_the_chief_checkpoint_bit_for_bit(two_workers):
    run_dir = two_workers["run_dir"]
    cfg = load_run_config(run_dir / "config.yaml")
    model = build_model(cfg.model, cfg.preprocess.image_size)
    restore_weights(model, find_checkpoint(run_dir))
    assert weights_fingerprint(model) == fingerprints(run_dir)[0]
    evaluated = run_module("retina.evaluate", f"run_dir={run_dir}", cwd=two_workers["tmp"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert (run_dir / "eval" / "ckpt-10-test" / "metrics.json").is_file()


def test_a_single_process_run_resumes_a_two_worker_checkpoint(two_workers, shared_data):
    """Fine-tuning or continuing on one machine: the 2-worker run's data position, weights
    and optimizer carry over, and its steps continue at 11."""
    run_dir = two_workers["run_dir"]
    continued = train(smoke_config(shared_data, [*COMPARABLE, "train.epochs=3"]), run_dir)
    assert np.isfinite(continued["referable_auc"])
    assert losses(run_dir)["step"].tolist() == list(range(1, 16))


@pytest.mark.slow  # 31 s; the other direction (one process resumes two workers') stays
def test_two_workers_resume_a_single_process_checkpoint(two_workers, shared_data, tmp_path):
    """The other direction: a one-process run continued by two workers."""
    run_dir = tmp_path / "grown"
    train(smoke_config(shared_data, COMPARABLE), run_dir)
    results = finish(start_workers(shared_data, run_dir, ["train.epochs=3"]))
    for code, output in results:
        assert code == 0, output[-3000:]
        assert f"Restored from {run_dir / 'latest' / 'ckpt-10'}" in output
    found = fingerprints(run_dir)
    assert found[0] == found[1]
    assert losses(run_dir)["step"].tolist() == list(range(1, 16))


@pytest.mark.slow  # 70 s on two cores; the SIGTERM test below covers a worker stopping
def test_killed_worker_restart_resumes_from_last_checkpoint(shared_data, tmp_path, two_workers):
    """Worker 1 is SIGKILLed after step 7; the chief fails on the lost peer. Restarting both
    resumes from ckpt-6 and the steps run 1..10 once each, as in the uninterrupted run."""
    run_dir = tmp_path / "run"
    every = ["checkpoint.every_steps=2"]
    killed = start_workers(
        shared_data,
        run_dir,
        every,
        env_of=lambda index: {"RETINA_FAULT": "step:7"} if index == 1 else {},
    )
    (chief_code, chief_output), (worker_code, _) = finish(killed)
    assert worker_code == -signal.SIGKILL
    assert chief_code == EXIT_PREEMPTED, chief_output[-2000:]
    assert "another worker stopped (no heartbeat from /job:worker/replica:0/task:1)" in (
        chief_output
    )
    assert f"resume from {run_dir / 'latest' / 'ckpt-6'}" in chief_output
    restarted = finish(start_workers(shared_data, run_dir, every))
    for code, output in restarted:
        assert code == 0, output[-3000:]
        assert f"Restored from {run_dir / 'latest' / 'ckpt-6'}" in output
        assert "Training steps 7..10" in output
    resumed, uninterrupted = losses(run_dir), losses(two_workers["single"])
    assert resumed["step"].tolist() == list(range(1, 11))
    np.testing.assert_allclose(resumed["loss"], uninterrupted["loss"], rtol=1e-5)


@pytest.mark.slow  # 25 s; test_resume_exact's SIGTERM test covers the single-worker path
def test_sigterm_to_one_worker_saves_everywhere_at_one_step(shared_data, tmp_path):
    """tf.distribute's preemption handler: the signal reaches one worker, both save at the
    step they agree on and exit 75; the restart resumes right after it."""
    run_dir = tmp_path / "run"
    long_run = ["train.epochs=400"]
    processes = start_workers(shared_data, run_dir, long_run)
    steps = run_dir / "steps.csv"
    deadline = time.monotonic() + WORKER_TIMEOUT
    while not (steps.exists() and len(steps.read_text().splitlines()) > 20):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)
    results = finish(processes)
    assert [code for code, _ in results] == [EXIT_PREEMPTED] * 2, results[0][1][-2000:]
    saved = [re.search(r"saved (\S+) at step (\d+)", output) for _, output in results]
    assert saved[0] and saved[1] and saved[0].group(2) == saved[1].group(2)
    step = int(saved[0].group(2))
    assert find_checkpoint(run_dir).name == f"ckpt-{step}"
    assert losses(run_dir)["step"].tolist() == list(range(1, step + 1))


@pytest.mark.slow  # 19 s; two workers already train like one process (above)
def test_mirrored_on_two_cpu_devices_trains_like_one_device(two_workers, shared_data):
    """``trainer.strategy=mirrored`` splits each batch over two logical CPU devices."""
    run_dir = two_workers["tmp"] / "mirrored"
    extra = ["trainer.strategy=mirrored", "trainer.cpu_devices=2"]
    result = run_module("retina.train", *_overrides(shared_data, run_dir, extra), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored: 2 replicas on 1 worker(s)" in result.stderr + result.stdout
    np.testing.assert_allclose(
        losses(run_dir)["loss"], losses(two_workers["single"])["loss"], rtol=1e-5
    )


def test_one_overflowing_replica_makes_every_replica_skip():
    """Each replica's loss-scale optimizer judges its own gradients before they are summed;
    ``agree_on_finite`` makes a local overflow everyone's, so all replicas skip together."""
    script = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from retina.training.steps import agree_on_finite, all_finite
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
def step():
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    gradient = tf.where(replica == 1, float("inf"), 1.0) * tf.ones([3])
    return all_finite([gradient]), all_finite(agree_on_finite([gradient], all_finite([gradient])))
own, agreed = strategy.run(tf.function(step))
print("own", [bool(v) for v in strategy.experimental_local_results(own)])
print("agreed", [bool(v) for v in strategy.experimental_local_results(agreed)])
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "own [True, False]" in result.stdout
    assert "agreed [False, False]" in result.stdout


def test_dropout_masks_on_two_replicas_are_the_single_process_masks():
    """Plain and per-example (stochastic-depth style) dropout, adapted to replicas: the two
    replicas' outputs, put together, equal one process's output on the whole batch."""
    script = """
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from retina.training.distribute import adapt_to_replicas
batch = np.random.RandomState(0).rand(8, 3, 3, 4).astype("float32")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
def build(noise_shape):
    inputs = keras.Input((3, 3, 4))
    return keras.Model(inputs, keras.layers.Dropout(0.5, noise_shape, seed=7)(inputs))
for noise_shape in (None, (None, 1, 1, 1)):
    alone = build(noise_shape)(batch, training=True).numpy()
    with strategy.scope():
        model = build(noise_shape)
    adapt_to_replicas(model, sync_batchnorm=True)
    halves = strategy.experimental_distribute_values_from_function(
        lambda c: batch[c.replica_id_in_sync_group * 4 : c.replica_id_in_sync_group * 4 + 4])
    out = strategy.run(tf.function(lambda x: model(x, training=True)), args=(halves,))
    joined = np.concatenate([o.numpy() for o in strategy.experimental_local_results(out)])
    print(float((alone == 0).mean()), np.array_equal(alone, joined))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split() for line in result.stdout.strip().splitlines()]
    assert [equal for _, equal in lines] == ["True", "True"], lines
    assert all(0 < float(dropped) < 1 for dropped, _ in lines), lines  # dropout did act


# ------------------------------------------------------------------ pieces, in-process


def test_auto_is_the_default_strategy_without_gpus_and_names_are_checked():
    assert resolve_strategy("auto") == "default"
    with pytest.raises(ConfigError, match="trainer.strategy='horovod'"):
        resolve_strategy("horovod")


def test_slurm_environment_gives_one_worker_per_node(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SLURM_") or key == "TF_CONFIG":
            monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "1(x2)")
    resolver = cluster_resolver(TrainerConfig(strategy="multi_worker", slurm_port=9100))
    assert resolver.cluster_spec().as_dict() == {"worker": ["gpu07:9100", "gpu08:9100"]}
    assert task_position(resolver) == (1, 2)


def test_multi_worker_without_a_cluster_says_how_to_describe_one(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SLURM_") or key == "TF_CONFIG":
            monkeypatch.delenv(key)
    with pytest.raises(ConfigError, match="set TF_CONFIG on every worker"):
        cluster_resolver(TrainerConfig(strategy="multi_worker"))
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}}')
    with pytest.raises(ConfigError, match="TF_CONFIG is not usable"):
        cluster_resolver(TrainerConfig(strategy="multi_worker"))


def test_batch_size_must_split_evenly_over_replicas():
    check_batch_size(5, 1)
    check_batch_size(8, 4)
    with pytest.raises(ConfigError, match="train.batch_size=6 cannot be split evenly over 4"):
        check_batch_size(6, 4)
    one = Placement(tf.distribute.MirroredStrategy(["/cpu:0"]), name="mirrored")
    assert (one.num_replicas, one.describe()) == (1, "one device")


@pytest.mark.parametrize("sampler", ["shuffle", "balanced"])
def test_workers_split_every_global_batch_and_positions_move_between_worker_counts(
    tmp_path, sampler
):
    """Worker slices of a global batch concatenate to the single-process batch; a position
    checkpointed by worker 0 restores into worker 1 and into a single process."""
    labels = (np.arange(24) % 5).astype(np.int32)
    paths = []
    for i in range(24):
        path = tmp_path / f"scan{i}.png"
        tf.io.write_file(str(path), tf.io.encode_png(np.full((2, 2, 3), i, np.uint8)))
        paths.append(str(path))

    def stream(index, workers):
        options = StreamOptions(sampler, 0, True, index, workers)
        dataset = make_train_dataset(paths, labels, 8, seed=3, options=options)
        return iter(dataset.map(lambda x, y: x[:, 0, 0, 0]))  # the scan number

    reference = stream(0, 1)
    expected = [next(reference).numpy() for _ in range(9)]
    halves = [stream(i, 2) for i in range(2)]
    for batch in expected[:4]:
        np.testing.assert_array_equal(np.concatenate([next(h).numpy() for h in halves]), batch)
    path = tf.train.Checkpoint(iterator=halves[0]).write(str(tmp_path / "position"))
    for index, workers in [(1, 2), (0, 1)]:
        moved = stream(index, workers)
        tf.train.Checkpoint(iterator=moved).read(path).assert_consumed()
        following = [next(moved).numpy() for _ in range(5)]
        size = 8 // workers
        for got, batch in zip(following, expected[4:], strict=True):
            np.testing.assert_array_equal(got, batch[index * size : (index + 1) * size])


@pytest.mark.slow  # 20 s: two workers
def test_workers_whose_auto_precision_differs_all_train_in_float32(shared_data, tmp_path):
    """Worker 0 on an AVX2 CPU (float32 by rule), worker 1 on an AMX CPU whose measurement
    found mixed_bfloat16 faster: they notice, and both train in float32."""
    cache = tmp_path / "precision-cache"
    cpuinfo = {}
    for index, flags in enumerate(["avx2 fma", "avx2 amx_tile amx_bf16"]):
        cpuinfo[index] = tmp_path / f"cpuinfo-{index}"
        cpuinfo[index].write_text(f"model name\t: Test CPU\nflags\t\t: {flags}\n")
    worker_cfg = smoke_config(
        shared_data, [*COMPARABLE, "train.precision=auto", f"train.precision_cache={cache}"]
    )
    key = precision.probe_key(worker_cfg, precision.read_cpu(cpuinfo[1]))
    stored = cache_file(cache, key)
    stored.parent.mkdir(parents=True)
    rates = {"float32": 100.0, "mixed_bfloat16": 200.0}
    stored.write_text(json.dumps({"schema": 1, "key": key, "images_per_s": rates}))

    run_dir = tmp_path / "run"
    processes = start_workers(
        shared_data,
        run_dir,
        [f"train.precision_cache={cache}", "train.epochs=1"],
        env_of=lambda index: {precision.CPU_INFO_VARIABLE: str(cpuinfo[index])},
        precision="auto",
    )
    for code, output in finish(processes):
        assert code == 0, output[-3000:]
        assert "Precision: float32 (train.precision=auto: this worker chose" in output
    assert load_run_config(run_dir).train.resolved_precision == "float32"

"""The checkpoint layer on real runs: ledger, faults, optimizer groups, lock, CLI."""

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, smoke_config
from retina.checkpoint import RunLock, find_checkpoint, rank, read_sidecar
from retina.errors import CheckpointError, TrainingDiverged
from retina.reports.integrity import checkpoint_rows
from retina.run_dir import load_run_config
from retina.training.loop import train
from retina.training.session import open_session

NAN = float("nan")


@pytest.mark.parametrize(
    "values, steps, offer, mode, expected_steps, admitted",
    [
        ([NAN, NAN], [-1, -1], (0.7, 5), "max", [5, -1], True),
        ([0.9, 0.7], [5, 10], (0.8, 15), "max", [5, 15], True),
        ([0.9, 0.7], [5, 10], (0.6, 15), "max", [5, 10], False),
        ([0.2, 0.4], [5, 10], (0.3, 15), "min", [5, 15], True),
        ([0.9, NAN], [5, -1], (NAN, 15), "max", [5, -1], False),  # NaN never ranks
        ([0.9, NAN], [5, -1], (float("inf"), 15), "max", [5, -1], False),
        ([0.8, 0.8], [5, 10], (0.8, 15), "max", [15, 10], True),  # ties: newer first
    ],
)
def test_ledger_ranking(values, steps, offer, mode, expected_steps, admitted):
    _, new_steps, was_admitted, _ = rank(
        np.array(values, np.float32), np.array(steps), offer[0], offer[1], mode
    )
    assert new_steps.tolist() == expected_steps and was_admitted == admitted


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shared_data):
    """A smoke run (10 steps) saving every 2 steps: latest/ holds ckpt-6, 8 and 10."""
    run_dir = tmp_path_factory.mktemp("ckpt") / "run"
    cfg = smoke_config(shared_data, ["checkpoint.every_steps=2", "train.evaluate_test=false"])
    train(cfg, run_dir)
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(trained_run, target)
    return target


def _restore(run_dir):
    return open_session(load_run_config(run_dir / "config.yaml"), run_dir)


def test_latest_and_best_folders_and_sidecars(trained_run):
    latest = sorted(p.name for p in (trained_run / "latest").glob("*.meta.json"))
    assert latest == ["ckpt-10.meta.json", "ckpt-6.meta.json", "ckpt-8.meta.json"]
    meta = read_sidecar(trained_run / "latest" / "ckpt-10")
    assert meta["step"] == 10 and meta["epoch"] == 2
    assert set(meta["files"]) == {"ckpt-10.index", "ckpt-10.data-00000-of-00001"}
    assert {"config_hash", "manifest_hash", "versions", "metrics", "model_config"} <= set(meta)
    assert meta["versions"]["tensorflow"] == tf.__version__
    ledger = meta["best_ledger"]
    best = sorted(int(p.name[5:-10]) for p in (trained_run / "best").glob("*.meta.json"))
    assert sorted(ledger) == best and set(best) <= {5, 10}
    assert tf.train.latest_checkpoint(str(trained_run / "latest")).endswith("ckpt-10")


def test_best_is_the_ledger_top(trained_run):
    best = find_checkpoint(trained_run, "best")
    sidecars = (trained_run / "best").glob("*.meta.json")
    values = {p: json.loads(p.read_text())["metrics"]["referable_auc"] for p in sidecars}
    assert len(values) == 2
    assert read_sidecar(best)["metrics"]["referable_auc"] == max(values.values())


def _damage_newest(run_dir, how):
    data = run_dir / "latest" / "ckpt-10.data-00000-of-00001"
    if how == "truncated":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "bit-flipped":
        content = bytearray(data.read_bytes())
        content[len(content) // 2] ^= 0x01
        data.write_bytes(bytes(content))
    elif how == "missing-index":
        (run_dir / "latest" / "ckpt-10.index").unlink()


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "missing-index"])
def test_damaged_latest_falls_back_to_newest_intact(run_copy, how, caplog):
    _damage_newest(run_copy, how)
    with caplog.at_level(logging.WARNING):
        session = _restore(run_copy)
    assert session.restored_from.name == "ckpt-8" and int(session.state.step.numpy()) == 8
    assert "Skipping checkpoint" in caplog.text and "ckpt-10" in caplog.text
    assert (run_copy / "quarantine" / "latest-ckpt-10").is_dir()


@pytest.mark.parametrize("content", ["", "model_checkpoint_path: <<garbage\n\x00\x01"])
def test_garbled_state_file_is_reported_and_rebuilt(run_copy, content, caplog):
    (run_copy / "latest" / "checkpoint").write_text(content)
    with caplog.at_level(logging.WARNING):
        session = _restore(run_copy)
    assert session.restored_from.name == "ckpt-10"
    assert "garbled" in caplog.text
    assert tf.train.latest_checkpoint(str(run_copy / "latest")).endswith("ckpt-10")


def test_no_intact_checkpoint_stops_instead_of_restarting(run_copy):
    for data in (run_copy / "latest").glob("*.data-*"):
        data.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="no intact checkpoint") as error:
        _restore(run_copy)
    assert "ckpt-10" in str(error.value) and "ckpt-6" in str(error.value)


def test_orphans_of_a_killed_save_are_removed(run_copy, caplog):
    latest = run_copy / "latest"
    (latest / "ckpt-12_temp").mkdir()
    (latest / "ckpt-12_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    (latest / "ckpt-12.index").write_bytes(b"half")  # data without a sidecar
    (latest / ".ckpt-12.meta.json.tmp").write_text("{")
    with caplog.at_level(logging.WARNING):
        session = _restore(run_copy)
    assert session.restored_from.name == "ckpt-10"
    leftovers = [p.name for p in latest.iterdir() if "12" in p.name]
    assert leftovers == [] and "interrupted save" in caplog.text


def test_changed_architecture_names_variable_and_config_values(run_copy):
    cfg = load_run_config(run_copy / "config.yaml")
    cfg.model.widths = [8, 24]
    with pytest.raises(CheckpointError) as error:
        open_session(cfg, run_copy)
    message = str(error.value)
    assert "block2" in message, "names the first mismatching variable"
    assert "model.widths: checkpoint [8, 16], now [8, 24]" in message


def test_extra_layer_is_not_restored_silently(run_copy):
    cfg = load_run_config(run_copy / "config.yaml")
    cfg.model.widths = [8, 16, 16]
    with pytest.raises(CheckpointError, match="model.widths"):
        open_session(cfg, run_copy)


def test_second_process_on_a_run_directory_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released when the owner is done
        pass


def test_two_optimizers_with_different_learning_rates_restore_exactly(tmp_path, shared_data):
    cfg = smoke_config(
        shared_data, ["optimizer=backbone_head", "train.epochs=1", "train.evaluate_test=false"]
    )
    train(cfg, tmp_path)
    reader = tf.train.load_checkpoint(str(find_checkpoint(tmp_path)))
    session = _restore(tmp_path)
    optimizers = session.state.optimizers
    assert set(optimizers) == {"backbone", "head"}
    assert type(optimizers["backbone"]).__name__ == "Adam"
    assert type(optimizers["head"]).__name__ == "SGD"
    for name, optimizer in optimizers.items():
        for index, variable in enumerate(optimizer.variables):
            key = f"optimizers/{name}/_variables/{index}/.ATTRIBUTES/VARIABLE_VALUE"
            if key in reader.get_variable_to_shape_map():
                np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(key), key)
        assert int(optimizer.iterations.numpy()) == 5
    rates = {n: float(o.learning_rate.numpy()) for n, o in optimizers.items()}
    assert rates == pytest.approx({"backbone": 5e-4, "head": 1e-2})
    head_moments = [v for v in optimizers["head"].variables if "momentum" in v.path]
    assert head_moments and all(np.abs(v.numpy()).sum() > 0 for v in head_moments)


def test_disk_full_keeps_earlier_checkpoints_and_says_so(trained_run, tmp_path):
    """A file-size limit makes every write past it fail like a full disk (EFBIG)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    before = {p.name: p.read_bytes() for p in (run_dir / "latest").iterdir()}
    script = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from retina.run_dir import load_run_config
        from retina.training.loop import train
        cfg = load_run_config("{run_dir}/config.yaml")
        cfg.train.epochs = 3
        size = {(run_dir / "latest" / "ckpt-10.data-00000-of-00001").stat().st_size // 2}
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        train(cfg, "{run_dir}")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "CheckpointError: could not write" in result.stderr
    assert "Earlier checkpoints" in result.stderr
    after = {p.name: p.read_bytes() for p in (run_dir / "latest").iterdir() if p.name in before}
    assert after == before
    assert _restore(run_dir).restored_from.name == "ckpt-10"
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY


def test_checkpoints_command_lists_and_verifies(run_copy):
    _damage_newest(run_copy, "bit-flipped")
    rows = {(r["folder"], r["name"]): r for r in checkpoint_rows(run_copy)}
    assert rows[("latest", "ckpt-10")]["verifies"].startswith("NO: ckpt-10.data")
    assert rows[("latest", "ckpt-8")]["verifies"] == "yes"
    assert rows[("latest", "ckpt-8")]["step"] == 8
    result = subprocess.run(
        [sys.executable, "-m", "retina.checkpoints", str(run_copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "ckpt-6" in result.stdout and "NO:" in result.stdout
    assert json.loads((run_copy / "latest" / "ckpt-8.meta.json").read_text())["step"] == 8


def test_weights_only_initialisation_for_fine_tuning(run_copy, tmp_path, shared_data, caplog):
    source = run_copy / "latest" / "ckpt-10"
    cfg = smoke_config(shared_data, [f"checkpoint.init_from={source}", "optimizer=sgd"])
    with caplog.at_level(logging.INFO):
        session = open_session(cfg, tmp_path / "finetune")
    assert session.restored_from is None and "ckpt-10 (weights only)" in caplog.text
    assert int(session.state.step.numpy()) == 0  # a new run: step and optimizer start afresh
    original = _restore(run_copy).state.model  # full-state restore of the same checkpoint
    for mine, theirs in zip(session.state.model.weights, original.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), mine.path)


def _diverging(shared_data, *extra):
    """SGD at a learning rate of 1e12: the weights overflow within a few steps."""
    overrides = [
        "optimizer=sgd",
        "optimizer.learning_rate=1e12",
        "checkpoint.every_steps=1",
        "train.evaluate_test=false",
        *extra,
    ]
    return smoke_config(shared_data, overrides)


def test_diverging_loss_stops_without_saving_it(tmp_path, shared_data):
    cfg = _diverging(shared_data)
    with pytest.raises(
        TrainingDiverged, match=r"step (\d+): the (loss is|weights hold) (nan|inf|NaN)"
    ) as error:
        train(cfg, tmp_path)
    step = int(str(error.value).split()[1].rstrip(":"))
    saved = [int(p.name[5:-10]) for p in (tmp_path / "latest").glob("*.meta.json")]
    assert saved and max(saved) < step
    assert _restore(tmp_path).state.weights_are_finite()


def test_rollback_restores_and_halves_the_learning_rate(tmp_path, shared_data, caplog):
    cfg = _diverging(shared_data, "train.on_nonfinite=rollback")
    with caplog.at_level(logging.WARNING), pytest.raises(TrainingDiverged):
        train(cfg, tmp_path)
    assert caplog.text.count("Rolled back to") == 3  # then it gives up


def _small_state():
    import keras

    from retina.checkpoint import TrainingState
    from retina.config import ModelConfig
    from retina.models import build_model

    model = build_model(ModelConfig(widths=[4]), 16)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    return TrainingState(model=model, optimizers={"all": optimizer})


def test_background_writer_falls_back_to_synchronous_saves_without_tf_internals(
    tmp_path, monkeypatch, caplog
):
    """A TensorFlow without the internals the snapshot writer uses (simulated by hiding one
    module, as an upgrade that moved it would): one warning, then ordinary saves."""
    from retina.checkpoint import CheckpointStore

    monkeypatch.setitem(sys.modules, "tensorflow.python.checkpoint.functional_saver", None)
    state = _small_state()
    with caplog.at_level(logging.WARNING):
        store = CheckpointStore(tmp_path, state, {}, background=True)
        state.step.assign(1)
        first = store.save()
        state.step.assign(2)
        second = store.save()
        store.close()
    warnings = [r for r in caplog.records if "written on the training thread" in r.message]
    assert len(warnings) == 1 and "functional_saver" in warnings[0].message
    assert [p.name for p in (first, second)] == ["ckpt-1", "ckpt-2"]
    assert read_sidecar(second)["step"] == 2
    fresh = CheckpointStore(tmp_path, _small_state(), {})
    assert fresh.restore() == second and fresh.state.current_step == 2

"""train.precision: what ``auto`` chooses where, the float16-on-CPU warning, and a resumed
run keeping the policy it started with."""

import logging

import keras
import pytest

from conftest import smoke_config
from retina.run_dir import load_run_config
from retina.training import precision
from retina.training.loop import train

AMX = frozenset({"avx2", "amx_tile", "amx_bf16"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize(
    "model, gpus, flags, policy, reason_part",
    [
        ("small_cnn", [], AVX2, "float32", "no bfloat16 matrix instructions"),
        ("small_cnn", [], AMX, "mixed_bfloat16", "amx_bf16 and mixed_bfloat16 was measured"),
        ("small_cnn", [], frozenset({"avx512_bf16"}), "mixed_bfloat16", "avx512_bf16"),
        ("efficientnet_b0", [], AMX, "float32", "not measured faster than float32"),
        ("small_cnn", [(6, 1)], AMX, "float32", "6.1 is below 7.0"),
        ("efficientnet_b0", [(7, 5)], AVX2, "mixed_float16", "7.5 has float16 tensor cores"),
        ("small_cnn", [(8, 0), (9, 0)], AMX, "mixed_float16", "bfloat16 is an option"),
    ],
)
def test_auto_follows_the_hardware_and_the_model(model, gpus, flags, policy, reason_part):
    choice = precision.choose_auto(model, gpus, flags)
    assert choice.policy == policy
    assert reason_part in choice.reason
    assert precision.choose_auto(model, gpus, flags) == choice  # deterministic


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert precision.cpu_feature_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
    assert precision.cpu_feature_flags(tmp_path / "absent") == frozenset()


def test_mixed_float16_on_a_cpu_warns_once_with_the_reason_and_runs(caplog):
    with caplog.at_level(logging.INFO, logger="retina.training.precision"):
        try:
            assert precision.apply_precision("mixed_float16", "small_cnn") == "mixed_float16"
            assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [precision.float16_on_cpu_warning(precision.cpu_feature_flags())]
    assert "emulated" in warnings[0] and "Running as asked" in warnings[0]


@pytest.mark.parametrize("flags, advice", [(AMX, "mixed_bfloat16"), (AVX2, "float32")])
def test_the_float16_warning_suggests_what_this_cpu_runs_fast(flags, advice):
    assert f"Use train.precision={advice} (" in precision.float16_on_cpu_warning(flags)


def test_an_explicit_policy_is_used_as_written_even_on_resume():
    choice = precision.choose_precision("float32", "small_cnn", resumed_policy="mixed_bfloat16")
    assert choice.policy == "float32"


def test_auto_on_a_resumed_run_keeps_the_policy_in_its_config(
    tmp_path, shared_data, monkeypatch, caplog
):
    """Started where auto chose bfloat16 (a CPU reporting AMX-BF16), resumed where it would
    choose float32: the run goes on in mixed_bfloat16, as its config.yaml records."""
    run_dir = tmp_path / "run"
    overrides = ["train.precision=auto", "train.evaluate_test=false", "train.tensorboard=false"]
    monkeypatch.setattr(precision, "cpu_feature_flags", lambda: AMX)
    try:
        train(smoke_config(shared_data, [*overrides, "train.epochs=1"]), run_dir)
        saved = load_run_config(run_dir).train
        assert (saved.precision, saved.resolved_precision) == ("auto", "mixed_bfloat16")

        monkeypatch.setattr(precision, "cpu_feature_flags", lambda: AVX2)
        with caplog.at_level(logging.INFO, logger="retina.training.precision"):
            train(smoke_config(shared_data, [*overrides, "train.epochs=2"]), run_dir)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert "Precision: mixed_bfloat16 (train.precision=auto: kept from" in caplog.text
    assert load_run_config(run_dir).train.resolved_precision == "mixed_bfloat16"

"""train.precision: what ``auto`` chooses on which hardware, its measurement and cache on CPUs
with bfloat16 matrix instructions, the float16-on-CPU warning, and a resumed run keeping the
policy it started with.

The CPU is replaced through the precision choice's own seam (``RETINA_CPUINFO``, a cpuinfo
file), so every case runs on any machine: an AVX2-only CPU, an AVX512-BF16 one, an AMX one.
"""

import json
import logging
import re
import threading

import keras
import pytest

from conftest import smoke_config
from retina.run_dir import load_run_config
from retina.training import precision
from retina.training.loop import train
from retina.training.precision_cache import cache_file, cached_measurement
from retina.training.precision_probe import ProbeSettings, measure_policies

AVX2 = "fpu avx2 fma"
AVX512_BF16 = "fpu avx2 avx512f avx512_bf16"
AMX = "fpu avx2 avx512f amx_tile amx_bf16"
QUIET = ["train.evaluate_test=false", "train.tensorboard=false", "train.epochs=1"]
FINGERPRINT = re.compile(r"Model weights sha256 ([0-9a-f]{64})")


def _cpu(flags: str, model: str = "Test CPU") -> precision.Cpu:
    return precision.Cpu(model, frozenset(flags.split()))


def _pretend_cpu(monkeypatch, tmp_path, flags: str, model: str = "Test CPU") -> None:
    """The precision choice sees this CPU for the rest of the test (and in its processes)."""
    cpuinfo = tmp_path / f"cpuinfo-{'-'.join(flags.split())}"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n")
    monkeypatch.setenv(precision.CPU_INFO_VARIABLE, str(cpuinfo))


def _auto(tmp_path, shared_data, *overrides):
    return smoke_config(
        shared_data,
        ["train.precision=auto", f"train.precision_cache={tmp_path / 'cache'}", *overrides],
    )


@pytest.mark.parametrize(
    "gpus, flags, policy, reason_part",
    [
        ([], AVX2, "float32", "no bfloat16 matrix instructions"),
        ([], AVX512_BF16, None, ""),  # measured: see below
        ([], AMX, None, ""),
        ([(6, 1)], AMX, "float32", "6.1 is below 7.0"),
        ([(7, 5)], AVX2, "mixed_float16", "7.5 has float16 tensor cores"),
        ([(8, 0), (9, 0)], AMX, "mixed_float16", "bfloat16 is an option"),
    ],
)
def test_a_rule_decides_auto_on_gpus_and_cpus_without_bfloat16(gpus, flags, policy, reason_part):
    choice = precision.choose_by_rule(gpus, _cpu(flags))
    if policy is None:
        assert choice is None
    else:
        assert choice.policy == policy and reason_part in choice.reason


def test_the_cpu_is_read_from_cpuinfo_or_the_file_the_environment_names(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n"
    )
    cpu = precision.read_cpu(cpuinfo)
    assert cpu == precision.Cpu("AMD EPYC", frozenset({"fpu", "avx2", "amx_bf16", "amx_tile"}))
    assert cpu.bfloat16_matrix_flags == ["amx_bf16"]
    assert precision.read_cpu(tmp_path / "absent") == precision.Cpu("unknown CPU", frozenset())
    monkeypatch.setenv(precision.CPU_INFO_VARIABLE, str(cpuinfo))
    assert precision.read_cpu() == cpu


def test_auto_on_an_avx2_cpu_is_float32_without_measuring(tmp_path, shared_data, monkeypatch):
    _pretend_cpu(monkeypatch, tmp_path, AVX2)
    choice = precision.choose_precision(_auto(tmp_path, shared_data))
    assert choice.policy == "float32" and "no bfloat16 matrix instructions" in choice.reason
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("flags", [AVX512_BF16, AMX], ids=["avx512_bf16", "amx_bf16"])
def test_auto_measures_once_then_reads_the_cache(flags, tmp_path, shared_data, monkeypatch, caplog):
    """The first run measures both policies on the smoke model and keeps the figures; the
    second run (a new run directory) reads them and does not measure. Measuring leaves no
    trace in the run: both train the same weights, bit for bit."""
    _pretend_cpu(monkeypatch, tmp_path, flags)
    cfg = _auto(tmp_path, shared_data, *QUIET, "train.deterministic=true")
    with caplog.at_level(logging.INFO, logger="retina.training"):
        train(cfg, tmp_path / "first")
    first_weights = FINGERPRINT.search(caplog.text).group(1)
    assert "measuring float32 against mixed_bfloat16" in caplog.text
    stored = cache_file(tmp_path / "cache", precision.probe_key(cfg, precision.read_cpu()))
    record = json.loads(stored.read_text())
    rates = record["images_per_s"]
    assert set(rates) == {"float32", "mixed_bfloat16"} and min(rates.values()) > 0
    faster = max(rates, key=rates.get)
    assert load_run_config(tmp_path / "first").train.resolved_precision == faster
    assert f"kept in {stored}" in caplog.text and "measured now" in caplog.text

    caplog.clear()
    written = stored.read_bytes()
    with caplog.at_level(logging.INFO, logger="retina.training"):
        train(cfg, tmp_path / "second")
    assert "measuring" not in caplog.text and "measured before" in caplog.text
    assert FINGERPRINT.search(caplog.text).group(1) == first_weights
    assert stored.read_bytes() == written
    assert load_run_config(tmp_path / "second").train.resolved_precision == faster
    assert f"{rates['mixed_bfloat16']:.1f} images/s in mixed_bfloat16" in caplog.text


@pytest.mark.parametrize("faster", ["float32", "mixed_bfloat16"])
def test_auto_takes_the_policy_the_cache_measured_faster(
    faster, tmp_path, shared_data, monkeypatch
):
    _pretend_cpu(monkeypatch, tmp_path, AMX)
    cfg = _auto(tmp_path, shared_data)
    key = precision.probe_key(cfg, precision.read_cpu())
    stored = cache_file(tmp_path / "cache", key)
    stored.parent.mkdir(parents=True)
    rates = {"float32": 100.0, "mixed_bfloat16": 100.0, faster: 150.0}
    record = {"schema": 1, "key": key, "images_per_s": rates, "measured_at": "2026-12-01"}
    stored.write_text(json.dumps(record))
    choice = precision.choose_precision(cfg)
    assert choice.policy == faster and "150.0" in choice.reason


@pytest.mark.parametrize("damage", ["corrupt", "foreign", "no_figures"])
def test_an_unusable_cache_file_is_ignored_with_a_warning_and_rebuilt(
    damage, tmp_path, shared_data, monkeypatch, caplog
):
    _pretend_cpu(monkeypatch, tmp_path, AVX512_BF16)
    cfg = _auto(tmp_path, shared_data)
    key = precision.probe_key(cfg, precision.read_cpu())
    stored = cache_file(tmp_path / "cache", key)
    stored.parent.mkdir(parents=True)
    foreign_key = {**key, "cpu": "Another CPU"}
    stored.write_text(
        {
            "corrupt": '{"schema": 1, "key": ',
            "foreign": json.dumps(
                {
                    "schema": 1,
                    "key": foreign_key,
                    "images_per_s": {"float32": 1, "mixed_bfloat16": 9},
                }
            ),
            "no_figures": json.dumps({"schema": 1, "key": key, "images_per_s": {"float32": 5}}),
        }[damage]
    )
    with caplog.at_level(logging.INFO, logger="retina.training"):
        choice = precision.choose_precision(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(stored) in warnings[0] and "measuring again" in warnings[0]
    record = json.loads(stored.read_text())
    assert record["key"] == key and "measured now" in choice.reason
    assert choice.policy == max(record["images_per_s"], key=record["images_per_s"].get)


def test_the_probe_times_every_policy_it_is_given(shared_data):
    cfg = smoke_config(shared_data)
    result = measure_policies(
        cfg, ("float32", "mixed_bfloat16"), ProbeSettings(rounds=2, round_seconds=0.05)
    )
    assert [len(samples) for samples in result.samples.values()] == [2, 2]
    assert all(rate > 0 for rate in result.images_per_s.values())
    assert result.seconds >= sum(result.first_step_seconds.values())
    assert keras.mixed_precision.dtype_policy().name == "float32"  # left as it was


def test_mixed_float16_on_a_cpu_warns_once_with_the_reason_and_runs(shared_data, caplog):
    cfg = smoke_config(shared_data, ["train.precision=mixed_float16"])
    with caplog.at_level(logging.INFO, logger="retina.training.precision"):
        assert precision.apply_precision(cfg) == "mixed_float16"
        assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [precision.float16_on_cpu_warning(precision.read_cpu())]
    assert "emulated" in warnings[0] and "Running as asked" in warnings[0]


@pytest.mark.parametrize("flags, advice", [(AMX, "mixed_bfloat16"), (AVX2, "float32")])
def test_the_float16_warning_suggests_what_this_cpu_runs_fast(flags, advice):
    assert f"Use train.precision={advice} (" in precision.float16_on_cpu_warning(_cpu(flags))


def test_an_explicit_policy_is_used_as_written_even_on_resume(shared_data):
    cfg = smoke_config(shared_data, ["train.precision=float32"])
    assert precision.choose_precision(cfg, resumed_policy="mixed_bfloat16").policy == "float32"


def test_auto_on_a_resumed_run_keeps_the_policy_in_its_config(
    tmp_path, shared_data, monkeypatch, caplog
):
    """Started where auto chose bfloat16 (an AMX CPU whose cache measured it faster), resumed
    where it would choose float32 (an AVX2 CPU): the run goes on in mixed_bfloat16, as its
    config.yaml records."""
    run_dir = tmp_path / "run"
    _pretend_cpu(monkeypatch, tmp_path, AMX)
    cfg = _auto(tmp_path, shared_data, *QUIET)
    key = precision.probe_key(cfg, precision.read_cpu())
    stored = cache_file(tmp_path / "cache", key)
    stored.parent.mkdir(parents=True)
    rates = {"float32": 100.0, "mixed_bfloat16": 150.0}
    stored.write_text(json.dumps({"schema": 1, "key": key, "images_per_s": rates}))
    train(cfg, run_dir)
    saved = load_run_config(run_dir).train
    assert (saved.precision, saved.resolved_precision) == ("auto", "mixed_bfloat16")

    _pretend_cpu(monkeypatch, tmp_path, AVX2)
    with caplog.at_level(logging.INFO, logger="retina.training.precision"):
        train(_auto(tmp_path, shared_data, *QUIET[:2], "train.epochs=2"), run_dir)
    assert "Precision: mixed_bfloat16 (train.precision=auto: kept from" in caplog.text
    assert load_run_config(run_dir).train.resolved_precision == "mixed_bfloat16"


def test_concurrent_runs_measure_a_setting_once(tmp_path):
    """Two runs (threads here; processes hold the same lock) ask for one key at once: one
    measures while the other waits on the key's lock, then reads what was stored."""
    key = {"model": {"name": "small_cnn"}, "image_size": 48, "batch_size": 4}
    measured, both_started = [], threading.Barrier(2)
    second_measurement = threading.Event()

    def measure():
        measured.append(threading.get_ident())
        if len(measured) > 1:
            second_measurement.set()
        second_measurement.wait(timeout=1.0)  # without the lock the other run gets here too
        return {"images_per_s": {"float32": 100.0, "mixed_bfloat16": 120.0}}

    records = []

    def run():
        both_started.wait()
        records.append(cached_measurement(tmp_path, key, ("float32", "mixed_bfloat16"), measure))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(measured) == 1
    assert sorted(fresh for _, _, fresh in records) == [False, True]
    assert records[0][0] == records[1][0]

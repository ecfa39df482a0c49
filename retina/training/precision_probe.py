"""Measures training speed under each dtype policy on this machine: what
``train.precision=auto`` decides from on a CPU with bfloat16 matrix instructions, and what
``scripts/benchmark.py precision`` reports.

Each policy gets the run's own model, optimizers, loss and compiled training step
(``retina.training.steps``) on one fixed batch of random scans at the run's image size and
batch size (pixel values do not change what a step costs). Each policy's first step traces
and is not timed; then rounds alternate between the policies, so a noisy shared machine
slows them alike, and each figure is the median over the rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from retina.checkpoint.state import TrainingState
from retina.config import RunConfig
from retina.icdr import NUM_GRADES
from retina.models import build_model, without_pretrained
from retina.models.heads import num_outputs
from retina.training.losses import make_loss
from retina.training.optimizers import RateSetup, build_all, build_optimizers, variable_groups
from retina.training.steps import make_train_function

PROBE_POLICIES = ("float32", "mixed_bfloat16")


@dataclass(frozen=True)
class ProbeSettings:
    rounds: int = 3  # timed rounds per policy, interleaved
    round_seconds: float = 1.0  # about this long each: steps per round = this / one step
    max_steps: int = 20  # per round, however fast a step is
    budget_seconds: float = float("inf")  # a round stops once it took this long


@dataclass(frozen=True)
class ProbeResult:
    images_per_s: dict[str, float]  # policy -> median over the rounds
    samples: dict[str, list[float]]  # policy -> images/s of each round
    first_step_seconds: dict[str, float]  # policy -> the traced first step
    seconds: float  # what the whole probe cost, tracing included

    def faster(self) -> str:
        return max(self.images_per_s, key=self.images_per_s.get)


def build_stepper(cfg: RunConfig, policy: str) -> Callable[[], None]:
    """One training step of ``cfg``'s model under ``policy`` per call, on a fixed batch."""
    keras.mixed_precision.set_dtype_policy(policy)
    size, batch = cfg.preprocess.image_size, cfg.train.batch_size
    model = build_model(without_pretrained(cfg.model), size)
    rates = RateSetup(cfg.schedule, 1, 1, tf.Variable(1.0))
    optimizers = build_optimizers(cfg.optimizer, policy, rates)
    groups = variable_groups(model, list(optimizers))
    build_all(optimizers, groups, model)
    grades = np.arange(batch, dtype=np.int32) % NUM_GRADES
    images = tf.random.stateless_uniform((batch, size, size, 3), (0, 0), maxval=256, dtype=tf.int32)
    iterator = iter(tf.data.Dataset.from_tensors((tf.cast(images, tf.uint8), grades)).repeat())
    loss = make_loss(cfg.loss, cfg.model.head, num_outputs(cfg.model), grades)
    run = make_train_function(
        TrainingState(model=model, optimizers=optimizers),
        groups=groups,
        loss=loss,
        head=cfg.model.head,
        jit_compile=cfg.train.jit_compile,
    )
    return lambda: run(iterator, 1)[0].numpy()  # .numpy() waits for the step to finish


def _seconds(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _timed_round(step: Callable[[], None], steps: int, budget: float) -> tuple[int, float]:
    """(steps run, seconds): ``steps`` of them, or fewer once ``budget`` seconds are spent."""
    done, seconds = 0, 0.0
    while done < steps and (done == 0 or seconds < budget):
        seconds += _seconds(step)
        done += 1
    return done, seconds


def measure_policies(
    cfg: RunConfig,
    policies: tuple[str, ...] = PROBE_POLICIES,
    settings: ProbeSettings | None = None,
) -> ProbeResult:
    """Training images/s of ``cfg``'s model under each of ``policies``, interleaved. The
    global dtype policy is as it was afterwards; ``seconds`` is the whole cost, the models
    freed (that alone took 4 s for small_cnn)."""
    started = time.perf_counter()
    samples, first = _interleaved_rates(cfg, policies, settings or ProbeSettings())
    return ProbeResult(
        images_per_s={policy: statistics.median(rates) for policy, rates in samples.items()},
        samples=samples,
        first_step_seconds=first,
        seconds=time.perf_counter() - started,
    )


def _interleaved_rates(cfg: RunConfig, policies: tuple[str, ...], settings: ProbeSettings):
    """({policy: images/s of each round}, {policy: seconds of its traced first step})."""
    previous = keras.mixed_precision.dtype_policy()
    try:
        steppers = {policy: build_stepper(cfg, policy) for policy in policies}
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    first = {policy: _seconds(step) for policy, step in steppers.items()}  # traces
    one_step = {policy: _seconds(step) for policy, step in steppers.items()}
    steps = {
        policy: round(np.clip(settings.round_seconds / seconds, 1, settings.max_steps))
        for policy, seconds in one_step.items()
    }
    samples = {policy: [] for policy in policies}
    for _ in range(settings.rounds):
        for policy, step in steppers.items():
            done, seconds = _timed_round(step, steps[policy], settings.budget_seconds)
            samples[policy].append(done * cfg.train.batch_size / seconds)
    return samples, first

"""``python scripts/benchmark.py train [--train-patients 300] [--repeats 5]``: what the
training loop and its input stream cost, as ratios measured in one run.

The default run configuration on ``--train-patients`` synthetic patients at
``--image-size`` px, float32. One epoch each, after a warm-up epoch (tracing and the first
prefetch), interleaved ``--repeats`` rounds, medians: (a) the custom loop against
``model.fit`` (same architecture, optimizer, loss and stream); (b) the real stream against
one batch repeated from memory, the stream read from PNG files (in-memory scan cache off)
and the stream with ``augment=light``. Precision: see ``precision``.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from pathlib import Path

from bench.common import conf_preset, interleaved, medians, seconds, train_config


def add_arguments(parser) -> None:
    """None of its own: ``--train-patients``, ``--image-size`` and ``--repeats`` are shared."""


def _augment_preset(name: str):
    from retina.config import AugmentConfig

    return conf_preset("augment", name, AugmentConfig)


def _stream(cfg, session):
    """The training stream ``cfg`` describes, over the session's training scans."""
    from retina.data.pipeline import StreamOptions, make_train_dataset

    rows = session.train_rows
    return make_train_dataset(
        rows["cache_path"].tolist(),
        rows["grade"].tolist(),
        cfg.train.batch_size,
        cfg.seed,
        cfg.augment,
        StreamOptions(cfg.train.sampler, cfg.train.memory_cache_mb),
    )


def _with_iterator(session, iterator):
    """The same session (model, optimizers, compiled steps) drawing from another stream."""
    state = copy.copy(session.state)
    state.iterator = iterator
    return dataclasses.replace(session, state=state)


class _FitTimer:
    """Seconds of each ``model.fit`` epoch from its first batch on (its iterator start-up
    and first prefetch left out: a favour to fit)."""

    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == 0:
                    timer.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                timer.seconds.append(time.perf_counter() - timer.started)

        self.callback, self.seconds, self.started = Callback(), [], 0.0


def _fit_epoch(cfg, session):
    """A function that trains one ``model.fit`` epoch of the same architecture, optimizer,
    loss and stream, and returns its seconds."""
    import keras

    from retina.models import build_model

    model = build_model(cfg.model, cfg.preprocess.image_size)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.optimizer.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    data, timer = _stream(cfg, session), _FitTimer()

    def fit_epoch():
        model.fit(
            data,
            epochs=1,
            steps_per_epoch=session.steps_per_epoch,
            verbose=0,
            callbacks=[timer.callback],
        )
        return timer.seconds[-1]

    return fit_epoch


def _loop_epoch(session, work: Path):
    """A function that trains one epoch of the custom loop on a session drawing from any
    stream, the steps numbered on across calls, and returns its seconds."""
    from retina.run_dir import StepLog
    from retina.training.loop import run_steps
    from retina.training.preemption import StopSignal

    spe = session.steps_per_epoch
    steps_log = StepLog(work / "steps.csv", 0)
    position = {"step": 0}

    def loop_epoch(which):
        first = position["step"] + 1
        position["step"] += spe
        with StopSignal() as stop:
            return seconds(lambda: run_steps(which, first, first + spe - 1, steps_log, stop))

    return loop_epoch


def _operations(cfg, session, work: Path) -> dict:
    import tensorflow as tf

    loop_epoch = _loop_epoch(session, work)
    batch = next(iter(session.state.iterator))  # one real batch, repeated from memory
    in_memory = _with_iterator(session, iter(tf.data.Dataset.from_tensors(batch).repeat()))
    streamed_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, memory_cache_mb=0))
    streamed = _with_iterator(session, iter(_stream(streamed_cfg, session)))
    light_cfg = dataclasses.replace(cfg, augment=_augment_preset("light"))
    light = _with_iterator(session, iter(_stream(light_cfg, session)))
    return {
        "custom loop (real stream)": lambda: loop_epoch(session),
        "model.fit (real stream)": _fit_epoch(cfg, session),
        "custom loop (tensors in memory)": lambda: loop_epoch(in_memory),
        "custom loop (stream from PNG files)": lambda: loop_epoch(streamed),
        "custom loop (real stream, augment=light)": lambda: loop_epoch(light),
    }


def _ratios(med: dict) -> dict:
    memory = med["custom loop (tensors in memory)"]
    return {
        "(a) custom loop / model.fit, steps/s (target >= 1.0)": med["model.fit (real stream)"]
        / med["custom loop (real stream)"],
        "(b) real stream / tensors in memory, images/s (target >= 0.95)": memory
        / med["custom loop (real stream)"],
        "    stream from PNG files / tensors in memory": memory
        / med["custom loop (stream from PNG files)"],
        "    augment=light stream / tensors in memory": memory
        / med["custom loop (real stream, augment=light)"],
    }


def run(args) -> dict:
    """(a) the custom loop against model.fit, (b) the real stream against tensors already in
    memory (precision: see ``precision``)."""
    from retina.training.session import open_session

    work = Path(tempfile.mkdtemp(prefix="retina-bench-train-"))
    cfg = train_config(args, work)
    session = open_session(cfg, work / "fp32")
    operations = _operations(cfg, session, work)
    for operation in operations.values():  # warm-up: tracing and the first prefetch
        operation()
    samples = interleaved(operations, args.repeats)
    med = medians(samples)
    images = session.steps_per_epoch * cfg.train.batch_size
    return {
        "train_scans": len(session.train_rows),
        "steps_per_epoch": session.steps_per_epoch,
        "batch": cfg.train.batch_size,
        "image_size": cfg.preprocess.image_size,
        "model": cfg.model.name,
        "images_per_s": {name: images / taken for name, taken in med.items()},
        "epoch_seconds_samples": {name: [round(v, 3) for v in vs] for name, vs in samples.items()},
        "ratios": _ratios(med),
    }

"""``python scripts/benchmark.py checkpoint [--widths 64 128 256 512] [--repeats 15]``:
what saving and restoring a checkpoint costs over moving the same bytes by hand.

A small_cnn of ``--widths`` at ``--image-size`` px, its Adam moments filled by one real
step. Interleaved ``--repeats`` rounds, medians: the checkpoint store's save against a raw
write+fsync of the same bytes and against a plain ``tf.train.Checkpoint.write``; the
non-blocking save (time until ``save()`` returns) against the synchronous one; the verified
restore against a raw read of the same files.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import interleaved, medians, seconds


def add_arguments(parser) -> None:
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[64, 128, 256, 512],
        help="small_cnn widths of the benchmarked model",
    )


def _raw_write_fsync(path: Path, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _checkpoint_state(widths: list[int], image_size: int):
    """A small_cnn of the given widths with Adam moments filled by one real step."""
    import keras
    import numpy as np
    import tensorflow as tf

    from retina.checkpoint import TrainingState
    from retina.config import LossConfig, ModelConfig, OptimizerConfig, ScheduleConfig
    from retina.models import build_model
    from retina.training.losses import make_loss
    from retina.training.optimizers import RateSetup, build_all, build_optimizers, variable_groups
    from retina.training.steps import make_train_function

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(widths=widths), image_size)
    rates = RateSetup(ScheduleConfig(), 1, 1, tf.Variable(1.0))
    optimizers = build_optimizers(OptimizerConfig(), "float32", rates)
    groups = variable_groups(model, list(optimizers))
    build_all(optimizers, groups, model)
    images = tf.random.uniform((8, image_size, image_size, 3), maxval=255, dtype=tf.int32)
    dataset = tf.data.Dataset.from_tensors((tf.cast(images, tf.uint8), tf.range(8) % 5))
    iterator = iter(dataset.repeat())
    state = TrainingState(model=model, optimizers=optimizers, iterator=iterator)
    loss = make_loss(LossConfig(), "softmax", 5, np.arange(8) % 5)
    make_train_function(state, groups=groups, loss=loss)(iterator, 1)
    return state


def _operations(state, work: Path, stores: tuple, prefix: Path, payload: bytes) -> dict:
    """Each timed operation, returning its seconds."""
    from retina.checkpoint.files import damage, data_files
    from retina.checkpoint.read import verified_read

    sync, background = stores
    raw = work / "raw.bin"

    def blocking_part_of_background_save():
        started = time.perf_counter()
        background.save()
        elapsed = time.perf_counter() - started
        background.wait()  # outside the timing: the write overlaps training in real runs
        return elapsed

    def restore():
        assert damage(prefix) is None
        verified_read(lambda: state.checkpoint.read(str(prefix)), prefix, complete=True)

    return {
        "save": lambda: seconds(sync.save),
        "plain_tf_write": lambda: seconds(lambda: state.checkpoint.write(str(work / "plain"))),
        "raw_write_fsync": lambda: seconds(lambda: _raw_write_fsync(raw, payload)),
        "background_save_blocking": blocking_part_of_background_save,
        "restore": lambda: seconds(restore),
        "raw_read": lambda: seconds(lambda: [p.read_bytes() for p in data_files(prefix)]),
    }


def _ratios(med: dict) -> dict:
    return {
        "save / raw write+fsync (target <= 1.5)": med["save"] / med["raw_write_fsync"],
        "plain tf.train.Checkpoint.write / raw write+fsync": med["plain_tf_write"]
        / med["raw_write_fsync"],
        "save / plain tf.train.Checkpoint.write": med["save"] / med["plain_tf_write"],
        "non-blocking save blocking / sync save (target <= 0.1)": med["background_save_blocking"]
        / med["save"],
        "restore / raw read": med["restore"] / med["raw_read"],
    }


def run(args) -> dict:
    """Save vs raw write+fsync of the same bytes; non-blocking vs synchronous save (time
    until ``save()`` returns); restore vs raw read of the same files."""
    from retina.checkpoint.files import data_files
    from retina.checkpoint.store import CheckpointStore

    state = _checkpoint_state(args.widths, args.image_size)
    work = Path(tempfile.mkdtemp(prefix="retina-bench-"))
    sync = CheckpointStore(work / "sync", state, {}, background=False)
    background = CheckpointStore(work / "background", state, {}, background=True)
    prefix = sync.save()
    background.save()
    background.wait()  # the first non-blocking save traces its snapshot function
    payload = b"".join(p.read_bytes() for p in data_files(prefix))
    operations = _operations(state, work, (sync, background), prefix, payload)
    med = medians(interleaved(operations, args.repeats))
    background.close()
    return {
        "checkpoint_mib": len(payload) / 2**20,
        "parameters": int(state.model.count_params()),
        "seconds": med,
        "ratios": _ratios(med),
    }

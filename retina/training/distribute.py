"""tf.distribute for the training loop: ``trainer.strategy`` becomes a strategy, and this
process learns its place in the cluster (worker index, worker count, chief or not).

Every worker builds the same model, optimizers and state under ``strategy.scope()``; the
global batch (``train.batch_size``) is cut into one slice per worker by the input stream
and one slice per local device here; gradients are summed across replicas by the Keras
optimizer. Worker 0 is the chief: the only one that writes into the run directory.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import keras
import tensorflow as tf

from retina.config import Cluster, Strategy, TrainerConfig, require_choice
from retina.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """The strategy and where this process sits in it."""

    strategy: tf.distribute.Strategy
    worker_index: int = 0
    num_workers: int = 1
    name: str = "default"

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def local_replicas(self) -> int:
        return self.num_replicas // self.num_workers

    @property
    def multi_worker(self) -> bool:
        return self.name == "multi_worker"

    def describe(self) -> str:
        if self.num_replicas == 1 and self.num_workers == 1:
            return "one device"
        return (
            f"{self.name}: {self.num_replicas} replicas on {self.num_workers} worker(s), "
            f"this is worker {self.worker_index}{' (chief)' if self.is_chief else ''}"
        )


def resolve_strategy(requested: str) -> str:
    """``auto`` is ``mirrored`` when more than one GPU is visible, ``default`` otherwise."""
    requested = require_choice("trainer.strategy", requested, Strategy)
    if requested != Strategy.auto:
        return requested
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def build_placement(cfg: TrainerConfig) -> Placement:
    """Creates the strategy. Call before any other TensorFlow work in the process: the
    multi-worker strategy configures collective ops, which only works at start-up."""
    name = resolve_strategy(cfg.strategy)
    if name != "multi_worker" and os.environ.get("TF_CONFIG"):
        log.warning(
            "TF_CONFIG is set but trainer.strategy=%s: training on this machine only. Use "
            "trainer.strategy=multi_worker to train across the cluster it describes.",
            cfg.strategy,
        )
    if name == "multi_worker":
        resolver = cluster_resolver(cfg)
        strategy = _start_multi_worker(resolver)
        index, count = task_position(resolver)
        return Placement(strategy, index, count, name)
    if name == "mirrored":
        return Placement(tf.distribute.MirroredStrategy(_mirrored_devices(cfg)), name=name)
    return Placement(tf.distribute.get_strategy(), name=name)


def cluster_resolver(cfg: TrainerConfig):
    """The cluster from ``TF_CONFIG`` or from Slurm's environment (``trainer.cluster``)."""
    source = require_choice("trainer.cluster", cfg.cluster, Cluster)
    if source == "auto":
        source = "tf_config" if os.environ.get("TF_CONFIG") else "slurm"
    if source == "tf_config":
        _check_tf_config()
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if "SLURM_PROCID" not in os.environ:
        raise ConfigError(
            "trainer.strategy=multi_worker needs a cluster: set TF_CONFIG on every worker, "
            "or run under Slurm (srun, or hydra/launcher=slurm_multi_worker). See "
            "docs/distributed.md."
        )
    return tf.distribute.cluster_resolver.SlurmClusterResolver(
        port_base=cfg.slurm_port,
        # One task per node, seeing all of the node's GPUs. Counted here because the
        # resolver's own count runs nvidia-smi, which CPU nodes lack; at least 1, because
        # with 0 it assigns no task at all (its task loop steps through GPU slots).
        gpus_per_node=max(len(tf.config.list_physical_devices("GPU")), 1),
        auto_set_gpu=False,
    )


def _check_tf_config() -> None:
    try:
        spec = json.loads(os.environ["TF_CONFIG"])
        spec["cluster"], spec["task"]["type"], spec["task"]["index"]
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            f"TF_CONFIG is not usable ({type(error).__name__}: {error}); it must be JSON like "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        ) from None


def task_position(resolver) -> tuple[int, int]:
    """(index, count) of this task among the cluster's workers (a ``chief`` task first)."""
    spec = resolver.cluster_spec().as_dict()
    order = [(job, i) for job in ("chief", "worker") for i in range(len(spec.get(job, [])))]
    return order.index((resolver.task_type, resolver.task_id)), len(order)


def _start_multi_worker(resolver) -> tf.distribute.Strategy:
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except RuntimeError as error:  # "Collective ops must be configured at program startup"
        raise ConfigError(
            f"trainer.strategy=multi_worker could not start ({error}). It must be created "
            "before any other TensorFlow work in the process: run one python -m retina.train "
            "per worker."
        ) from None


def _mirrored_devices(cfg: TrainerConfig) -> list[str] | None:
    """All GPUs; on a machine without GPUs, ``trainer.cpu_devices`` logical CPU devices."""
    if tf.config.list_physical_devices("GPU") or cfg.cpu_devices <= 1:
        return None
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cfg.cpu_devices
        )
    except RuntimeError:
        raise ConfigError(
            f"trainer.cpu_devices={cfg.cpu_devices} must be set before TensorFlow starts: "
            "run it as its own python -m retina.train."
        ) from None
    return [f"/cpu:{i}" for i in range(cfg.cpu_devices)]


def check_batch_size(batch_size: int, replicas: int) -> None:
    if batch_size % replicas:
        raise ConfigError(
            f"train.batch_size={batch_size} cannot be split evenly over {replicas} replicas "
            f"(trainer.strategy); use a multiple of {replicas}."
        )


class GlobalBatchDropout(keras.layers.Dropout):
    """Keras Dropout whose mask is drawn for the whole global batch, each replica keeping
    its own rows.

    Keras keeps a Dropout's seed in a variable the strategy mirrors, so a plain Dropout
    draws the same mask on every replica. Drawn this way, row ``i`` of the global batch
    gets exactly the mask it gets in one process.
    """

    def call(self, inputs, training=False):
        context = tf.distribute.get_replica_context()
        if not training or self.rate == 0 or context is None:
            return super().call(inputs, training=training)
        replicas = context.num_replicas_in_sync
        rows = tf.shape(inputs)[0]
        shape = [
            tf.shape(inputs)[axis] if size is None else size
            for axis, size in enumerate(self.noise_shape or [None] * len(inputs.shape))
        ]
        shape[0] = rows * replicas
        mask = keras.random.dropout(
            tf.ones(tf.stack(shape), inputs.dtype), self.rate, seed=self.seed_generator
        )
        start = context.replica_id_in_sync_group * rows
        return inputs * mask[start : start + rows]


def adapt_to_replicas(model: keras.Model, sync_batchnorm: bool) -> None:
    """Makes the model train on several replicas as it would in one process:

    - BatchNormalization averages its batch statistics across replicas (with
      ``sync_batchnorm``), so the moving statistics stay identical on every worker;
    - Dropout draws its masks for the global batch (``GlobalBatchDropout``).

    Both are read at call time, so they hold for the step traced afterwards; the saved
    model and its checkpoints are unchanged.
    """
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization) and sync_batchnorm:
            layer.synchronized = True
        if type(layer) is keras.layers.Dropout and (layer.noise_shape or [None])[0] is None:
            # Same state as Keras's Dropout (its seed generator): only the call differs.
            layer.__class__ = GlobalBatchDropout


def wait_for_all_workers(placement: Placement) -> None:
    """A barrier: returns once every worker got here (a one-number all-reduce)."""
    if placement.num_workers > 1:
        strategy = placement.strategy
        ones = strategy.run(lambda: tf.constant(1.0))
        strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)


def same_on_every_worker(placement: Placement, choice: int, choices: int) -> bool:
    """Whether every worker passed the same ``choice`` (an index below ``choices``): the
    workers' one-hot votes summed, one choice holding them all."""
    if placement.num_workers == 1:
        return True
    strategy = placement.strategy
    votes = strategy.run(lambda: tf.one_hot(choice, choices))
    counts = strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)
    return int(tf.reduce_max(counts)) == placement.num_replicas


def split_for_replicas(placement: Placement, images: tf.Tensor, grades: tf.Tensor):
    """This worker's batch cut into one slice per local device (mirrored on several GPUs);
    unchanged when the worker has a single replica."""
    local = placement.local_replicas
    if local == 1:
        return images, grades
    size = tf.shape(images)[0] // local

    def piece(context):
        start = (context.replica_id_in_sync_group % local) * size
        return images[start : start + size], grades[start : start + size]

    return placement.strategy.experimental_distribute_values_from_function(piece)


def loopback_tf_configs(num_workers: int) -> list[str]:
    """``TF_CONFIG`` values for ``num_workers`` workers on this machine (127.0.0.1, free
    ports): to try multi-worker training, or test it, without a cluster."""
    import socket

    sockets = [socket.socket() for _ in range(num_workers)]
    for sock in sockets:  # held together, so no two workers get the same port
        sock.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    return [
        json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(num_workers)
    ]

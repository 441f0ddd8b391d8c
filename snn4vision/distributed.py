"""Training on several machines: the cluster from ``TF_CONFIG`` and TensorFlow's distribution strategy for it.

When ``TF_CONFIG`` names more than one worker, training runs under
``tf.distribute.MultiWorkerMirroredStrategy``: every worker holds a copy of
the model, takes its share of each global batch and all-reduces the
gradients, so the job computes what one process would with the same global
batch. BatchNorm statistics are all-reduced too (:func:`synchronise_batch_norm`).
The chief (task ``chief``, or ``worker`` 0 when there is none) alone writes
the run directory; the run directory and the data must be at the same path
on every worker (a shared filesystem) for ``--resume`` to work.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from .errors import UserError

#: What a collective op raises when a peer dies or cannot be reached.
WORKER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                   tf.errors.AbortedError, tf.errors.FailedPreconditionError, tf.errors.InternalError)


@dataclass(frozen=True)
class Cluster:
    """This process's place in the job: ``workers`` tasks in all, this one at ``index`` (the chief is 0)."""

    workers: int = 1
    index: int = 0

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


def cluster_from_env(environ=None) -> Cluster:
    """The :class:`Cluster` that ``TF_CONFIG`` describes (one worker when it is unset or names one task)."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return Cluster()
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = task["type"], int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"TF_CONFIG is not a TensorFlow cluster spec: set it on each host to JSON such as "
                        f"{TF_CONFIG_EXAMPLE}, with this host's task") from None
    others = sorted(set(cluster) - {"chief", "worker"})
    if others:
        raise UserError(f"TF_CONFIG names {', '.join(others)} tasks, but training runs on chief and worker tasks "
                        "only (MultiWorkerMirroredStrategy): remove them")
    if len(chiefs) > 1:
        raise UserError(f"TF_CONFIG names {len(chiefs)} chiefs: name at most one")
    tasks = {"chief": chiefs, "worker": workers}
    if kind not in tasks or not 0 <= index < len(tasks[kind]):
        raise UserError(f"TF_CONFIG's task {kind} {index} is not in its cluster ({len(chiefs)} chief, "
                        f"{len(workers)} workers): give each host its own task type and index")
    return Cluster(len(chiefs) + len(workers), index if kind == "chief" else index + len(chiefs))


def make_strategy(cluster: Cluster):
    """MultiWorkerMirroredStrategy for several workers, MirroredStrategy for several local GPUs, else the default.

    Call it before TensorFlow runs anything else: the multi-worker strategy
    configures the runtime's collective ops, which must happen first. It
    waits until every worker of ``TF_CONFIG`` has started.
    """
    if cluster.multi_worker:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def check_global_batch(batch_size: int, replicas: int) -> None:
    """Refuse a global batch that does not split evenly into the ``replicas``' batches."""
    if batch_size % replicas:
        raise UserError(f"--batch-size {batch_size} is the global batch, and it does not split evenly among the "
                        f"{replicas} replicas: use a multiple of {replicas}")


def synchronise_batch_norm(model) -> int:
    """Make every BatchNormalization layer of ``model`` all-reduce its batch statistics across replicas.

    Then a step on ``n`` replicas of ``B / n`` images normalises as one
    process does on ``B``. Returns how many layers were switched. (The
    ``synchronized`` option of the layer, set after construction; it has no
    fused kernel.)
    """
    count = 0
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.synchronized, layer.fused = True, False
            count += 1
    return count


def shard_by_example(dataset):
    """``dataset`` split among the workers batch element by batch element (every worker reads it in full).

    With the same seed on every worker, each global batch is the one a
    single process would draw, and each worker takes a distinct part of it.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)

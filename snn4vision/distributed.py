"""Training on several machines: the cluster from ``TF_CONFIG`` and TensorFlow's distribution strategy for it.

When ``TF_CONFIG`` names more than one worker, training runs under
``tf.distribute.MultiWorkerMirroredStrategy``: every worker holds a copy of
the model, takes its share of each global batch and all-reduces the
gradients, so the job computes what one process would with the same global
batch. BatchNorm statistics are all-reduced too (:func:`synchronise_batch_norm`).
The chief (task ``chief``, or ``worker`` 0 when there is none) alone writes
the run directory; the run directory and the data must be at the same path
on every worker (a shared filesystem) for ``--resume`` to work.

Every worker waits for all the others to start, at most
``SNN4VISION_WORKER_TIMEOUT`` seconds (an environment variable; default
600), and then stops with one line naming the workers that never answered.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field

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
    #: ``"worker 1 (host:port)"`` for every task, in the order of ``index``
    tasks: tuple = field(default=(), compare=False)

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


#: Environment variable: seconds a worker waits for the others to start.
WAIT_VARIABLE = "SNN4VISION_WORKER_TIMEOUT"
DEFAULT_WAIT_S = 600.0


def _spec_error(problem: str) -> UserError:
    return UserError(f"TF_CONFIG is not a TensorFlow cluster spec ({problem}): set it on each host to JSON such "
                     f"as {TF_CONFIG_EXAMPLE}, with this host's task")


def _parse_spec(text: str) -> tuple[dict, str, int]:
    """The cluster, task type and task index of TF_CONFIG's JSON ``text``."""
    try:
        spec = json.loads(text)
    except ValueError:
        raise _spec_error("it is not JSON") from None
    if not isinstance(spec, dict):
        raise _spec_error(f"it is {text[:40]}, not a JSON object")
    for key in ("cluster", "task"):
        if not isinstance(spec.get(key), dict):
            raise _spec_error(f"it has no \"{key}\" object")
    cluster, task = spec["cluster"], spec["task"]
    index = task.get("index")
    index = int(index) if isinstance(index, str) and index.isdigit() else index  # TensorFlow takes "1" too
    if not isinstance(task.get("type"), str) or isinstance(index, bool) or not isinstance(index, int):
        raise _spec_error("its task needs to be such as {\"type\": \"worker\", \"index\": 0}")
    return cluster, task["type"], index


def _addresses(cluster: dict, kind: str) -> list:
    """The ``host:port`` addresses of TF_CONFIG's ``kind`` tasks, each checked."""
    addresses = cluster.get(kind, [])
    if not isinstance(addresses, list):
        raise _spec_error(f"it lists its {kind} tasks as {type(addresses).__name__}, not a list of \"host:port\"")
    for address in addresses:
        host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise UserError(f"TF_CONFIG's {kind} address {json.dumps(address)} is not host:port: give every task "
                            "its host and a port from 1 to 65535, e.g. \"host1:12345\"")
    return addresses


def cluster_from_env(environ=None) -> Cluster:
    """The :class:`Cluster` that ``TF_CONFIG`` describes (one worker when it is unset or names one task)."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return Cluster()
    cluster, kind, index = _parse_spec(text)
    others = sorted(set(cluster) - {"chief", "worker"})
    if others:
        raise UserError(f"TF_CONFIG names {', '.join(others)} tasks, but training runs on chief and worker tasks "
                        "only (MultiWorkerMirroredStrategy): remove them")
    chiefs, workers = _addresses(cluster, "chief"), _addresses(cluster, "worker")
    if len(chiefs) > 1:
        raise UserError(f"TF_CONFIG names {len(chiefs)} chiefs: name at most one")
    repeated = sorted({a for a in chiefs + workers if (chiefs + workers).count(a) > 1})
    if repeated:
        raise UserError(f"TF_CONFIG gives {', '.join(repeated)} to more than one task: give each task its own "
                        "host:port")
    tasks = {"chief": chiefs, "worker": workers}
    if kind not in tasks or not 0 <= index < len(tasks[kind]):
        raise UserError(f"TF_CONFIG's task {kind} {index} is not in its cluster ({len(chiefs)} chief, "
                        f"{len(workers)} workers): give each host its own task type and index")
    names = [f"chief 0 ({a})" for a in chiefs] + [f"worker {i} ({a})" for i, a in enumerate(workers)]
    return Cluster(len(names), index if kind == "chief" else index + len(chiefs), tuple(names))


def _address(task: str) -> tuple[str, int]:
    host, _, port = task[task.index("(") + 1:-1].rpartition(":")
    return host.strip("[]"), int(port)


def _listen(task: str) -> socket.socket:
    """A listener on this task's port while it waits for the others (so they see it has started)."""
    listener = socket.socket()
    # as gRPC does: a closed connection's TIME_WAIT does not block the port, a listener does
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", _address(task)[1]))  # gRPC listens on every interface
    except OSError as exc:
        listener.close()
        raise UserError(f"cannot listen on the port of this host's task, {task} ({exc.strerror}): stop the "
                        "process that holds it, or give this task a free port in TF_CONFIG on every host") from None
    listener.listen(64)
    listener.setblocking(False)
    return listener


def _answer(listener: socket.socket) -> None:
    """Accept and close the probes queued on ``listener`` (a full queue would turn later probes away)."""
    while True:
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            return


def wait_seconds(environ=None) -> float:
    """How long to wait for the other workers: ``SNN4VISION_WORKER_TIMEOUT`` seconds, default 600."""
    text = (os.environ if environ is None else environ).get(WAIT_VARIABLE, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_WAIT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UserError(f"{WAIT_VARIABLE}={text} is not a number of seconds: set it to how long each worker may "
                        f"wait for the others to start, e.g. {DEFAULT_WAIT_S:.0f}")
    return seconds


def unreachable(cluster: Cluster, timeout: float = 1.0) -> list:
    """The other tasks of ``cluster`` that do not accept a connection (not started yet, or a wrong address)."""
    missing = []
    for i, task in enumerate(cluster.tasks):
        if i == cluster.index:
            continue
        try:
            socket.create_connection(_address(task), timeout=timeout).close()
        except OSError:
            missing.append(task)
    return missing


def wait_for_peers(cluster: Cluster, seconds: float, poll: float = 1.0) -> None:
    """Listen on this task's port until every other task's port answers, at most ``seconds``.

    TensorFlow's own wait for the cluster can be neither bounded nor
    interrupted (it holds the interpreter); after this one it is short.
    """
    deadline = time.monotonic() + seconds
    with _listen(cluster.tasks[cluster.index]) as listener:
        while True:
            _answer(listener)
            missing = unreachable(cluster, timeout=poll)
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(poll)
    if missing:
        raise UserError(f"{' and '.join(missing)} of TF_CONFIG did not start within {seconds:g} s: start it with "
                        f"the same command and its own TF_CONFIG task, or let the workers wait longer with "
                        f"{WAIT_VARIABLE}=SECONDS")


def make_strategy(cluster: Cluster):
    """MultiWorkerMirroredStrategy for several workers, MirroredStrategy for several local GPUs, else the default.

    Call it before TensorFlow runs anything else: the multi-worker strategy
    configures the runtime's collective ops, which must happen first. It
    waits until every worker of ``TF_CONFIG`` has started, at most
    ``SNN4VISION_WORKER_TIMEOUT`` seconds (:func:`wait_seconds`).
    """
    if cluster.multi_worker:
        wait_for_peers(cluster, wait_seconds())
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except tf.errors.UnknownError as exc:  # the port was taken since
            raise UserError(f"cannot start this host's task, {cluster.tasks[cluster.index]} "
                            f"({str(exc).strip()[:120]}): free its port or give it another in TF_CONFIG on every "
                            "host") from None
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

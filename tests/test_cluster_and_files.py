"""Bad cluster configs and damaged run files are one line each: TF_CONFIG's shape, a taken port, a worker that
never starts (a bounded wait), and run files that are empty, incomplete or not UTF-8."""
import json
import socket
import threading
import time

import pytest
import tensorflow as tf

from snn4vision import cli, rundir
from snn4vision.checkpoints import EpochCheckpointer, read_json
from snn4vision.distributed import Cluster, cluster_from_env, wait_for_peers, wait_seconds
from snn4vision.errors import UserError

WORKERS = ["a:1", "b:2"]


def _spec(cluster=None, task=None) -> str:
    return json.dumps({"cluster": cluster or {"worker": WORKERS}, "task": task or {"type": "worker", "index": 0}})


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", r"TF_CONFIG is not a TensorFlow cluster spec \(it is \[1, 2\], not a JSON object\)"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), 'cluster spec \\(it has no "cluster" object'),
    (json.dumps({"cluster": {"worker": WORKERS}}), 'cluster spec \\(it has no "task" object'),
    (_spec(task={"type": "worker", "index": True}), "cluster spec \\(its task needs to be such as"),
    (_spec(task={"type": "worker", "index": 2}), r"task worker 2 is not in its cluster \(0 chief, 2 workers\)"),
    (_spec({"worker": ["a", "b:2"]}), 'worker address "a" is not host:port'),
    (_spec({"worker": ["a:1", "b:65536"]}), 'worker address "b:65536" is not host:port'),
    (_spec({"chief": [7], "worker": WORKERS}), "chief address 7 is not host:port"),
    (_spec({"worker": "a:1"}), "cluster spec \\(it lists its worker tasks as str, not a list"),
    (_spec({"worker": ["a:1", "a:1"]}), "TF_CONFIG gives a:1 to more than one task"),
])
def test_tf_config_of_the_wrong_shape_is_one_line(text, message):
    with pytest.raises(UserError, match=message):
        cluster_from_env({"TF_CONFIG": text})


def test_tf_config_names_every_task_with_its_address():
    cluster = cluster_from_env({"TF_CONFIG": _spec({"chief": ["z:9"], "worker": WORKERS}, {"type": "worker",
                                                                                           "index": "1"})})
    assert cluster == Cluster(3, 2)
    assert cluster.tasks == ("chief 0 (z:9)", "worker 0 (a:1)", "worker 1 (b:2)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local(*ports) -> tuple:
    return tuple(f"worker {i} (127.0.0.1:{port})" for i, port in enumerate(ports))


def test_a_taken_port_is_refused_before_waiting():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(UserError, match=rf"port of this host's task, worker 0 \(127.0.0.1:{port}\) \(.*in use"):
            wait_for_peers(Cluster(2, 0, _local(port, _free_port())), 30)
        assert time.monotonic() - start < 5


def test_the_wait_for_a_worker_that_never_starts_ends_naming_it():
    with socket.socket() as present:
        present.bind(("127.0.0.1", 0))
        present.listen()
        absent = _free_port()
        cluster = Cluster(3, 0, _local(_free_port(), present.getsockname()[1], absent))
        start = time.monotonic()
        with pytest.raises(UserError) as caught:
            wait_for_peers(cluster, 0.5, poll=0.1)
    waited = time.monotonic() - start
    assert 0.5 <= waited < 5, waited
    assert str(caught.value).startswith(f"worker 2 (127.0.0.1:{absent}) of TF_CONFIG did not start within 0.5 s")
    assert "worker 1" not in str(caught.value) and "SNN4VISION_WORKER_TIMEOUT" in str(caught.value)


def test_waiting_workers_see_each_other():
    """Each listens on its own port while it waits: two that start together both go on, well before the limit."""
    ports = [_free_port(), _free_port()]
    outcome, done = {}, threading.Barrier(2)

    def worker(index):
        try:
            wait_for_peers(Cluster(2, index, _local(*ports)), 20, poll=0.1)
            outcome[index] = "ok"
        except UserError as exc:
            outcome[index] = str(exc)
        with socket.socket() as server:  # then TensorFlow's server listens there
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("", ports[index]))
            server.listen()
            done.wait(30)

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcome == {0: "ok", 1: "ok"} and time.monotonic() - start < 10


def test_the_wait_is_set_by_an_environment_variable():
    assert wait_seconds({}) == 600
    assert wait_seconds({"SNN4VISION_WORKER_TIMEOUT": " 2.5 "}) == 2.5
    for bad in ("soon", "0", "-3", "inf", "nan"):
        with pytest.raises(UserError, match=f"SNN4VISION_WORKER_TIMEOUT={bad} is not a number of seconds"):
            wait_seconds({"SNN4VISION_WORKER_TIMEOUT": bad})


def test_train_ann_gives_up_on_a_missing_worker_before_touching_the_run(monkeypatch, tmp_path):
    absent = _free_port()
    monkeypatch.setenv("TF_CONFIG", _spec({"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{absent}"]}))
    monkeypatch.setenv("SNN4VISION_WORKER_TIMEOUT", "0.5")

    def joined():  # TensorFlow's own wait would never end (and holds the interpreter): never reach it
        raise AssertionError("the cluster was taken as complete")

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", joined)
    with pytest.raises(UserError, match=rf"worker 1 \(127.0.0.1:{absent}\) of TF_CONFIG did not start within 0.5 s"):
        cli._train_ann(["--run", str(tmp_path / "run"), "--dataset", str(tmp_path), "--batch-size", "16"])
    assert not (tmp_path / "run").exists()


# What the stages read from each run file; an emptied one names the file and the stage that writes it.
COMPLETE = {
    "config.json": {"run_dir": "r", "dataset": "d", "image_size": 32, "architecture": "vgg16", "seed": 0,
                    "split": [0.7, 0.1, 0.2]},
    "classes.json": ["beach", "forest"],
    "split.json": {"train": [], "val": [], "test": []},
    "metrics.json": {"test": {"accuracy": 0.5}, "history": [], "wall_time_s": 1.0},
    "conversion.json": {"ann_test_accuracy": 0.5, "variants": []},
    "energy.json": {"model": "m", "timesteps": 4, "snn_test_accuracy": 0.5, "spikes_per_image": 1.0,
                    "devices": {}, "summary": {}},
}
STAGES = {"config.json": "train_ann.py", "classes.json": "train_ann.py", "split.json": "train_ann.py",
          "metrics.json": "train_ann.py", "conversion.json": "convert_snn.py", "energy.json": "energy_estimation.py"}


@pytest.mark.parametrize("name", sorted(COMPLETE))
def test_an_emptied_run_file_names_itself_and_its_stage(tmp_path, name):
    path = tmp_path / name
    path.write_text(json.dumps(COMPLETE[name]))
    assert read_json(path) == COMPLETE[name]
    path.write_text("{}")
    with pytest.raises(UserError, match=rf"{path} is (empty|not a JSON list).*: re-run pipelines/{STAGES[name]} "
                                        rf"(\(or train_spiking_transformer.py\) )?--run {tmp_path} --overwrite$"):
        read_json(path)
    path.write_bytes(b'{"run": "\xff\xfe"}')
    with pytest.raises(UserError, match=rf"{path} is not UTF-8 text .*re-run pipelines/{STAGES[name]}"):
        read_json(path)


def test_a_run_file_without_a_key_a_stage_reads_names_the_key(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(COMPLETE["metrics.json"] | {"test": {"loss": 1.0}}))
    with pytest.raises(UserError, match=r'metrics.json has no "test.accuracy" \(emptied, or written by another '
                                        r'version\?\): re-run pipelines/train_ann.py'):
        read_json(path)
    other = tmp_path / "notes.json"  # not a run file: read as it is
    other.write_text("{}")
    assert read_json(other) == {}


def test_a_stage_reading_an_emptied_config_stops_in_one_line(tmp_path):
    for name, document in COMPLETE.items():
        (tmp_path / name).write_text(json.dumps(document))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="config.json is empty .*re-run pipelines/train_ann.py"):
        rundir.open_run(tmp_path)


def test_an_emptied_checkpoint_state_says_to_start_the_stage_over(tmp_path):
    checkpointer = EpochCheckpointer(tmp_path / "ann")
    (tmp_path / "ann").mkdir()
    checkpointer.state_path.write_text(json.dumps({"step": 2}))
    with pytest.raises(UserError, match=r"state.json is incomplete \(emptied\?\): start the stage again with "
                                        "--overwrite$"):
        checkpointer.restore()

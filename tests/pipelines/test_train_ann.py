"""End-to-end: train_ann.py on real UC Merced images, kill -9, resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
import pytest

from snn4vision import cli
from snn4vision.errors import UserError
from snn4vision.stages.training import train_ann

from ..conftest import ROOT, TINY_TRAIN_ARGS

pytestmark = pytest.mark.pipeline

SCRIPT = ROOT / "pipelines" / "train_ann.py"


def _argv(run_dir, dataset):
    return ["--run", str(run_dir), "--dataset", str(dataset), *TINY_TRAIN_ARGS]


@pytest.fixture(scope="module")
def reference_run(trained_run):
    """An uninterrupted run, in process."""
    return trained_run


def test_training_learns_real_images(reference_run):
    run_dir, metrics = reference_run
    # 4 classes: chance is 25 %.
    assert metrics["train"]["accuracy"] > 0.6
    assert metrics["val"]["accuracy"] + metrics["test"]["accuracy"] > 2 * 0.4
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test"]["num_images"] == len(json.loads((run_dir / "split.json").read_text())["test"])
    assert np.sum(saved["test"]["confusion_matrix"]) == saved["test"]["num_images"]
    assert set(saved["test"]["per_class_accuracy"]) == {"beach", "chaparral", "forest", "runway"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["image_size"] == 32 and config["seed"] == 7
    assert (run_dir / "ann.weights.h5").is_file()
    assert any((run_dir / "tensorboard" / "ann").iterdir())


def test_kill_9_then_resume_continues_the_same_run(tmp_path, small_subset, reference_run):
    _, reference = reference_run
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, str(SCRIPT), *_argv(run_dir, small_subset)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state_file = run_dir / "checkpoints" / "ann" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if state_file.exists() and json.loads(state_file.read_text())["step"] >= 1:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"
    killed_after = json.loads(state_file.read_text())["step"] + 1

    resumed = subprocess.run([sys.executable, str(SCRIPT), *_argv(run_dir, small_subset), "--resume"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {run_dir} after epoch {killed_after}" in resumed.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [h["epoch"] for h in reference["history"]]
    # Same data order, weights, optimizer state and schedule: the same losses as the uninterrupted run.
    np.testing.assert_allclose([h["loss"] for h in metrics["history"]],
                               [h["loss"] for h in reference["history"]], rtol=1e-3)
    np.testing.assert_allclose(metrics["test"]["accuracy"], reference["test"]["accuracy"], atol=0.09)


def test_finished_run_is_not_overwritten(reference_run, small_subset):
    run_dir, _ = reference_run
    args = cli.train_ann_parser().parse_args(_argv(run_dir, small_subset))
    with pytest.raises(UserError, match="--overwrite"):
        train_ann(cli.train_config(args))


def test_bad_input_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--run", str(tmp_path / "r"), "--dataset",
                             str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: image folder {tmp_path / 'missing'} does not exist: "
                                                  "pass the folder that holds one sub-folder per class"]
    result = subprocess.run([sys.executable, str(SCRIPT), "--run", str(tmp_path / "r2"), "--resume"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "nothing to resume" in result.stderr


def test_divergence_in_the_first_epoch_is_one_line_and_saves_nothing(tmp_path, small_subset):
    """SGD at a learning rate of 1e9 gives a NaN loss in epoch 1: no weights or metrics are saved."""
    run_dir = tmp_path / "r"
    result = subprocess.run([sys.executable, str(SCRIPT), *_argv(run_dir, small_subset), "--optimizer", "sgd",
                             "--learning-rate", "1e9", "--lr-schedule", "plateau", "--epochs", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training diverged in epoch 1 (loss nan")
    assert "lower --learning-rate (now 1e+09)" in lines[0]
    assert not (run_dir / "ann.weights.h5").exists() and not (run_dir / "metrics.json").exists()


def test_divergence_after_a_kept_epoch_stops_and_keeps_it(tmp_path):
    """With a best epoch committed, a later non-finite loss stops training and keeps that epoch."""
    from snn4vision.checkpoints import EpochCheckpointer
    from snn4vision.rundir import TrainConfig
    from snn4vision.stages.training import _divergence

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    checkpointer = EpochCheckpointer(tmp_path / "ckpt", model=model)
    config = TrainConfig(run_dir=str(tmp_path), learning_rate=0.5)
    with pytest.raises(UserError, match="before any epoch could be kept"):
        _divergence(1, float("nan"), float("nan"), checkpointer, config)
    checkpointer.save(0, {"history": []}, best_weights_of=model)
    assert _divergence(2, float("inf"), float("nan"), checkpointer, config) == 2


def test_overwrite_with_a_bad_dataset_keeps_the_finished_run(reference_run, tmp_path):
    """The bad --dataset is found after --overwrite set the old run aside: every file comes back unchanged."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference_run[0], run_dir)
    before = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
              if p.is_file() and p.name != ".lock"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--run", str(run_dir), "--dataset", str(tmp_path / "typo"),
                             "--overwrite"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: image folder {tmp_path / 'typo'} does not exist: "
                                                  "pass the folder that holds one sub-folder per class"]
    after = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
             if p.is_file() and p.name != ".lock"}
    assert after == before

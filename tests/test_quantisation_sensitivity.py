"""quantisation.quantisation_sensitivity against a NumPy forward pass of the same small network."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import snn4vision  # noqa: F401  (selects tf-keras)
import tensorflow as tf

from snn4vision import rundir
from snn4vision.checkpoints import load_weights
from snn4vision.errors import UserError
from snn4vision.layers import QCFS
from snn4vision.quantisation import qcfs_layers, quantisation_sensitivity, quantisation_threshold
from snn4vision.rundir import TrainConfig
from snn4vision.stages import training

from .conftest import make_subset


def _network():
    inputs = tf.keras.Input((4,))
    x = tf.keras.layers.Dense(6, name="d1")(inputs)
    x = QCFS(2, 1.0, name="q1")(x)
    x = tf.keras.layers.Dense(5, name="d2")(x)
    x = QCFS(3, 1.0, name="q2")(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="d3")(x))
    rng = np.random.default_rng(4)
    for name in ("d1", "d2", "d3"):
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([rng.normal(size=kernel.shape).astype(np.float32),
                                           rng.normal(0, 0.3, size=bias.shape).astype(np.float32)])
    for layer in (model.get_layer("q1"), model.get_layer("q2")):
        layer.quantising.assign(0.0)  # the end of a ReLU warm-up
    return model


def _reference(model, images, quantise: dict):
    """NumPy forward pass; ``quantise``: {layer: (levels, threshold)} for the layers that quantise."""
    def dense(name, x):
        kernel, bias = model.get_layer(name).get_weights()
        return x @ kernel + bias

    def act(name, x):
        if name not in quantise:
            return np.maximum(x, 0)
        levels, lam = quantise[name]
        return np.clip(np.floor(x / lam * levels + 0.5) / levels, 0, 1) * lam

    h1 = dense("d1", images)
    h2 = dense("d2", act("q1", h1))
    return dense("d3", act("q2", h2)), (h1, h2)


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def test_each_layer_alone_then_all_match_a_numpy_forward_pass():
    """Thresholds come from the ReLU network's activations (every other layer a ReLU, also one that was
    quantising), each layer is measured with only itself quantised, and a levels override is used for both its
    threshold and its quantisation."""
    model = _network()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(300, 4)).astype(np.float32)
    images = rng.normal(size=(400, 4)).astype(np.float32)
    relu_logits, _ = _reference(model, images, {})
    labels = np.argmax(relu_logits, axis=1)
    labels[::3] = rng.integers(0, 3, labels[::3].size)  # a ReLU accuracy below 1, so no ceiling hides a bug
    model.get_layer("q1").start_quantising(0.3)  # a network already quantising: measured from its ReLU state

    result = quantisation_sensitivity(model, [calibration[:150], calibration[150:]],
                                      [(images[:256], labels[:256]), (images[256:], labels[256:])],
                                      levels={"q2": 1})
    _, (h1, h2) = _reference(model, calibration, {})
    lam1 = quantisation_threshold(np.maximum(h1, 0).ravel(), 2)
    lam2 = quantisation_threshold(np.maximum(h2, 0).ravel(), 1)
    assert [(s.layer, s.levels) for s in result.layers] == [("q1", 2), ("q2", 1)]
    assert [s.threshold for s in result.layers] == pytest.approx([lam1, lam2], rel=1e-5)
    assert result.relu_accuracy == _accuracy(relu_logits, labels)
    alone_1 = _accuracy(_reference(model, images, {"q1": (2, lam1)})[0], labels)
    alone_2 = _accuracy(_reference(model, images, {"q2": (1, lam2)})[0], labels)
    both = _accuracy(_reference(model, images, {"q1": (2, lam1), "q2": (1, lam2)})[0], labels)
    assert [s.accuracy for s in result.layers] == [alone_1, alone_2]
    assert result.quantised_accuracy == both
    assert len({result.relu_accuracy, alone_1, alone_2, both}) >= 3  # the cases differ, so a mix-up shows
    # MACs 4 x 6 + 6 x 5 + 5 x 3 = 69; a spike of each of q1's 6 neurons reaches d2's 5 units, of q2's 5, d3's 3
    assert [s.spike_cost for s in result.layers] == pytest.approx([30 / 69, 15 / 69])
    assert "| q2 | 1 |" in result.table() and "| 0.217 |" in result.table()


def test_the_model_is_left_as_it_was():
    model = _network()
    q1, q2 = model.get_layer("q1"), model.get_layer("q2")
    q2.threshold.assign(0.7)
    q2.quantising.assign(1.0)
    before = model(np.ones((2, 4), np.float32)).numpy()
    images = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    quantisation_sensitivity(model, [images], [(images, np.zeros(20, int))], levels={"q1": 5})
    assert (q1.levels, q2.levels) == (2, 3)
    assert float(q2.threshold.numpy()) == pytest.approx(0.7)
    assert (float(q1.quantising.numpy()), float(q2.quantising.numpy())) == (0.0, 1.0)
    np.testing.assert_array_equal(model(np.ones((2, 4), np.float32)).numpy(), before)


@pytest.mark.parametrize("levels, message", [({"q9": 4}, "no QCFS layer named q9: the model's are q1, q2"),
                                             ({"q1": 0}, "q1=0"), ({"q1": 2.5}, "q1=2.5")])
def test_bad_levels_are_refused_in_one_line(levels, message):
    model = _network()
    images = np.zeros((4, 4), np.float32)
    with pytest.raises(UserError, match=message):
        quantisation_sensitivity(model, [images], [(images, np.zeros(4, int))], levels=levels)
    assert model.get_layer("q1").levels == 2


def test_a_model_without_qcfs_is_refused():
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
    with pytest.raises(UserError, match="no QCFS layer"):
        quantisation_sensitivity(model, [], [])


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quantisation_switch.py"


@pytest.mark.slow  # a two-epoch training and a fresh TensorFlow process
def test_the_benchmark_reads_a_runs_relu_warm_up_network(tmp_path):
    """benchmarks/quantisation_switch.py on a real run: the ReLU row is the saved warm-up network's accuracy on
    the test split (measured here through Keras' predict), the layers are the run's QCFS layers in order, a
    levels override shows, and a run without the warm-up network is one line."""
    subset = make_subset(tmp_path / "data", ["beach", "forest", "runway"], 10)
    config = TrainConfig(str(tmp_path / "run"), dataset=str(subset), image_size=32, width=0.125, batch_size=16,
                         epochs=2, warmup_epochs=1, augment="none", activation="qcfs", levels=2, qcfs_warmup=0.5,
                         kernel_l2=0.0, bias_l1=0.0, distill=0.5, split=(0.5, 0.2, 0.3))
    training.train_ann(config, verbose=False)
    run = rundir.open_run(config.run_dir)
    teacher = rundir.build_model(run.config, 3, weights="none")
    load_weights(teacher, Path(config.run_dir) / rundir.CHECKPOINTS / "ann" / training.TEACHER)
    logits = teacher.predict(run.batches("test", 8), verbose=0)
    relu = 100 * np.mean(np.argmax(logits, axis=1) == run.labels("test"))
    done = subprocess.run([sys.executable, str(SCRIPT), config.run_dir, "--levels", "block2_qcfs2=5"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"| {config.run_dir} | {relu:.1f} |" in done.stdout
    layers = [line.split(" | ")[0].lstrip("| ") for line in done.stdout.splitlines() if line.startswith("| block")]
    assert layers == [layer.name for layer in qcfs_layers(teacher)]
    assert "| block2_qcfs2 | 5 |" in done.stdout and "| block1_qcfs2 | 2 |" in done.stdout

    (Path(config.run_dir) / rundir.CHECKPOINTS / "ann" / training.TEACHER).unlink()
    done = subprocess.run([sys.executable, str(SCRIPT), config.run_dir], capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "teacher.weights.h5 is missing" in lines[0], done.stderr

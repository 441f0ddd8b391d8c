import numpy as np
import pytest
import tensorflow as tf

from snn4vision import conversion, models, simulation
from snn4vision.convert import verify
from snn4vision.layers import QCFS


def _qcfs_reference(x, lam, levels):
    return lam / levels * np.clip(np.floor(x * levels / lam + 0.5), 0, levels)


def test_qcfs_forward_matches_formula():
    layer = QCFS(levels=4, initial_threshold=2.0)
    x = np.linspace(-1, 3, 101, dtype=np.float32)
    np.testing.assert_allclose(layer(x).numpy(), _qcfs_reference(x, 2.0, 4), atol=1e-6)
    assert set(np.round(layer(x).numpy() / 0.5, 5)) == {0, 1, 2, 3, 4}


def test_qcfs_straight_through_gradients():
    layer = QCFS(levels=4, initial_threshold=2.0)
    x = tf.constant([-0.5, 0.3, 1.1, 2.5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x))
    # d/dx: 1 inside the clipping range (floor is straight-through), 0 outside
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [0, 1, 1, 0])
    # d/dlambda of lambda * clip(floor(x/lambda*L + 0.5)/L, 0, 1) with straight-through floor:
    # inside: q - x/lambda (q the quantised level / L); saturated at the top: 1; below zero: 0
    q = np.floor(np.array([0.3, 1.1]) / 2 * 4 + 0.5) / 4
    expected = np.sum(q - np.array([0.3, 1.1]) / 2) + 1.0
    assert tape.gradient(y, layer.threshold).numpy() == pytest.approx(expected, rel=1e-5)


def test_qcfs_serialises():
    model = tf.keras.Sequential([tf.keras.Input((3,)), QCFS(levels=8, initial_threshold=3.0, name="q")])
    copy = tf.keras.Sequential.from_config(model.get_config())
    assert copy.get_layer("q").levels == 8 and copy.get_layer("q").initial_threshold == 3.0
    x = np.array([[0.1, 1.0, 2.9]], np.float32)
    np.testing.assert_array_equal(copy(x).numpy(), model(x).numpy())


@pytest.fixture(scope="module")
def qcfs_ann():
    ann = models.vgg16(4, image_size=32, width=0.125, batch_norm=True, seed=2, activation="qcfs", levels=4)
    rng = np.random.default_rng(5)
    for layer in ann.layers:
        if isinstance(layer, QCFS):
            layer.threshold.assign(rng.uniform(0.5, 2.0))
    return ann


def test_if_spike_counts_equal_qcfs_levels_layer_by_layer(qcfs_ann):
    """With T = L and a constant input, every IF neuron fires exactly the ANN's quantised level."""
    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    net = conversion.fold_ann(qcfs_ann)
    _, activations = conversion.rate_forward(net, images, return_activations=True)
    x = tf.constant(images)
    for i, (kernel, bias, pool) in enumerate(zip(net.kernels, net.biases, net.pool_after)):
        h = tf.nn.conv2d(x, kernel, 1, "SAME") + bias  # this layer's constant input current
        lam = np.float32(net.thresholds[i])
        voltage, total = tf.fill(tf.shape(h), tf.constant(lam / 2, tf.float32)), tf.zeros_like(h)
        for _ in range(net.levels):
            voltage, count, _ = simulation.if_step(voltage, h, lam)
            total += count
        levels = np.clip(np.floor(h.numpy() * net.levels / lam + 0.5), 0, net.levels)
        np.testing.assert_array_equal(total.numpy(), levels)
        np.testing.assert_allclose(total.numpy() * lam / net.levels, activations[i].numpy(), atol=1e-5)
        x = tf.nn.avg_pool2d(activations[i], 2, 2, "VALID") if pool else activations[i]


def test_qcfs_network_converts_to_if_neurons_and_verify_reports(qcfs_ann):
    images = np.random.default_rng(1).random((4, 32, 32, 3)).astype(np.float32)
    net = conversion.fold_ann(qcfs_ann)
    np.testing.assert_allclose(conversion.rate_forward(net, images).numpy(), qcfs_ann(images).numpy(),
                               rtol=1e-4, atol=1e-5)
    snn = simulation.SpikingVGG.from_folded(net, 32, timesteps=4, tau=None, neuron="if")
    report = verify(qcfs_ann, snn, images, np.zeros(4, int), timesteps=4)
    assert [r["layer"] for r in report["layers"]][0] == "block1_qcfs1"
    assert report["layers"][0]["mean_abs_error"] < 1e-5  # first layer: constant input, exact
    assert report["unconverted"] == []
    assert 0 <= report["snn_accuracy"] <= 1


def test_verify_names_layers_it_cannot_convert():
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs)
    x = tf.keras.layers.ReLU(name="r")(x)
    x = tf.keras.layers.MaxPooling2D(name="maxpool")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = tf.keras.layers.Dropout(0.1, name="drop")(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="head")(x))
    problems = conversion.unconvertible_layers(model)
    assert [p.split(":")[0] for p in problems] == ["maxpool", "drop", "head"]

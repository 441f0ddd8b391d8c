import numpy as np
import pytest
import tensorflow as tf

from snn4vision import layer_graph, models, neurons, simulation
from snn4vision.stages.convert import verify
from snn4vision.layers import QCFS

from .conftest import vgg_layers


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


def test_qcfs_relu_warm_up_then_quantises():
    """While ``quantising`` is 0 the layer is a ReLU (no clipping at lambda); start_quantising switches to QCFS."""
    layer = QCFS(levels=4, initial_threshold=2.0)
    x = np.array([-1.0, 0.3, 1.1, 2.7, 9.0], np.float32)
    layer(x)
    layer.quantising.assign(0.0)
    np.testing.assert_array_equal(layer(x).numpy(), np.maximum(x, 0))
    layer.start_quantising(4.0)
    np.testing.assert_allclose(layer(x).numpy(), _qcfs_reference(x, 4.0, 4), atol=1e-6)  # levels of 1.0
    np.testing.assert_allclose(layer(x).numpy(), [0.0, 0.0, 1.0, 3.0, 4.0])


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
    net = layer_graph.build_graph(qcfs_ann)
    _, activations = layer_graph.rate_forward(net, images, return_activations=True)
    activations = list(activations.values())
    x = tf.constant(images)
    kernels, biases, pool_after, _ = vgg_layers(net)
    for i, (kernel, bias, pool) in enumerate(zip(kernels, biases, pool_after)):
        h = tf.nn.conv2d(x, kernel, 1, "SAME") + bias  # this layer's constant input current
        lam = np.float32(net.thresholds[i])
        voltage, total = tf.fill(tf.shape(h), tf.constant(lam / 2, tf.float32)), tf.zeros_like(h)
        for _ in range(net.levels):
            (voltage,), count, _ = neurons.IFNeuron().step((voltage,), h, lam, None, None)
            total += count
        levels = np.clip(np.floor(h.numpy() * net.levels / lam + 0.5), 0, net.levels)
        np.testing.assert_array_equal(total.numpy(), levels)
        np.testing.assert_allclose(total.numpy() * lam / net.levels, activations[i].numpy(), atol=1e-5)
        x = tf.nn.avg_pool2d(activations[i], 2, 2, "VALID") if pool else activations[i]


def test_qcfs_network_converts_to_if_neurons_and_verify_reports(qcfs_ann):
    images = np.random.default_rng(1).random((4, 32, 32, 3)).astype(np.float32)
    net = layer_graph.build_graph(qcfs_ann)
    np.testing.assert_allclose(layer_graph.rate_forward(net, images).numpy(), qcfs_ann(images).numpy(),
                               rtol=1e-4, atol=1e-5)
    snn = simulation.SpikingNetwork.from_graph(net, timesteps=4, tau=None, neuron="if")
    ann_logits = qcfs_ann(images).numpy()
    labels = ann_logits.argmax(1)
    labels[2:] = (labels[2:] + 1) % ann_logits.shape[1]  # the ANN is right on exactly half the images
    report = verify(qcfs_ann, snn, images, labels, timesteps=4)
    assert [r["layer"] for r in report["layers"]][0] == "block1_qcfs1"
    assert report["layers"][0]["mean_abs_error"] < 1e-5  # first layer: constant input, exact
    assert report["unconverted"] == []
    assert report["ann_accuracy"] == 0.5
    snn_predictions = snn.simulate(images, 4)["logits"].numpy().mean(axis=1).argmax(1)
    assert report["snn_accuracy"] == np.mean(snn_predictions == labels)
    assert report["accuracy_gap"] == 0.5 - report["snn_accuracy"]


def _signed_if_reference(currents, lam, burst=1):
    """A plain-Python signed IF neuron (one neuron, a list of input currents) firing up to ``burst`` spikes of
    either sign per step, one at a time, keeping its net count in [0, steps so far]: returns (count, membrane)."""
    v, count = lam / 2, 0
    for t, x in enumerate(currents, start=1):
        v += x
        for _ in range(burst):
            if v >= lam and count < t:
                v, count = v - lam, count + 1
            elif v < 0 and count > 0:
                v, count = v + lam, count - 1
    return count, v


def test_if_neuron_fires_when_the_membrane_reaches_the_threshold_exactly():
    # 0.25 + 0.25 + 0.5 = 1.0 exactly: no spike, no spike, spike; reset by subtraction leaves 0
    voltage = tf.zeros([3])
    counts = []
    for current in (0.25, 0.25, 0.5):
        (voltage,), count, out = neurons.IFNeuron().step((voltage,), tf.fill([3], current), 1.0, None, None)
        counts.append(count.numpy()[0])
    assert counts == [0.0, 0.0, 1.0] and voltage.numpy()[0] == 0.0 and out.numpy()[0] == 1.0


def test_signed_if_undoes_overshoot_by_hand():
    # lambda 1, membrane 0.5: +1 fires at step 1; -0.8 takes the membrane to -0.3, which a plain IF neuron
    # keeps (1 spike for a mean input of 0.05); the signed one answers with a negative spike (net 0 spikes,
    # membrane 0.7), and 0 = floor(0.05 * 4 / 1 + 0.5), the QCFS level of the mean input at L = 4.
    currents = [1.0, -0.8, 0.0, 0.0]
    for signed, expected_counts, expected_v in [(False, [1, 0, 0, 0], -0.3), (True, [1, -1, 0, 0], 0.7)]:
        cell = neurons.neuron("signed_if" if signed else "if")
        state, counts = (tf.constant([0.5]), tf.zeros(1))[:2 if signed else 1], []
        for t, x in enumerate(currents, start=1):
            state, n, out = cell.step(state, tf.constant([x]), 1.0, None, t)
            v = state[0]
            counts.append(float(n[0]))
            assert float(out[0]) == float(n[0])  # a spike carries lambda = 1
        assert counts == expected_counts
        np.testing.assert_allclose(v.numpy(), [expected_v], atol=1e-6)


def test_signed_if_counts_the_qcfs_level_of_the_mean_input():
    """Against a plain-Python neuron; and whenever the final membrane is in [0, lambda), the net count
    is clip(floor(sum / lambda + 1/2), 0, T): the QCFS level of the mean input at L = T."""
    rng = np.random.default_rng(3)
    lam, steps = np.float32(1.5), 8
    currents = rng.normal(0.4, 1.0, (500, steps)).astype(np.float32)
    state = neurons.SignedIFNeuron().initial_state([500], tf.constant(lam, tf.float32), seed=0)
    for t in range(steps):
        state, n, _ = neurons.SignedIFNeuron().step(state, currents[:, t], lam, None, t + 1)
    v, net = state
    reference = [_signed_if_reference(row, lam) for row in currents]
    np.testing.assert_array_equal(net.numpy(), [c for c, _ in reference])
    np.testing.assert_allclose(v.numpy(), [m for _, m in reference], atol=1e-5)
    settled = (v.numpy() >= 0) & (v.numpy() < lam)
    assert settled.mean() > 0.8
    quantised = np.clip(np.floor(currents.sum(axis=1) / lam + 0.5), 0, steps)
    np.testing.assert_array_equal(net.numpy()[settled], quantised[settled])
    assert net.numpy().min() >= 0  # never a negative net count


def test_signed_if_bursts_count_the_qcfs_level_of_every_neuron():
    """With bursts of up to T spikes per step, every neuron's net count after T steps is the QCFS level of its
    mean input, clip(floor(sum / lambda + 1/2), 0, T), whatever the order of its inputs."""
    rng = np.random.default_rng(4)
    lam, steps = np.float32(0.7), 6
    currents = rng.normal(0.3, 1.5, (400, steps)).astype(np.float32)
    for burst in (2, steps):
        cell = neurons.SignedIFNeuron(max_spikes=burst)
        state = cell.initial_state([400], tf.constant(lam, tf.float32), seed=0)
        for t in range(steps):
            state, n, out = cell.step(state, currents[:, t], lam, None, t + 1)
            assert np.abs(n.numpy()).max() <= burst
            np.testing.assert_allclose(out.numpy(), n.numpy() * lam, rtol=1e-6)
        v, net = state
        reference = [_signed_if_reference(row, lam, burst) for row in currents]
        np.testing.assert_array_equal(net.numpy(), [c for c, _ in reference])
        np.testing.assert_allclose(v.numpy(), [m for _, m in reference], atol=1e-5)
    quantised = np.clip(np.floor(currents.astype(np.float64).sum(axis=1) / lam + 0.5), 0, steps)
    np.testing.assert_array_equal(net.numpy(), quantised)


def test_signed_if_network_reproduces_the_qcfs_ann_at_t_equal_l(qcfs_ann):
    """Layer by layer, the signed network's mean output is the QCFS level of its mean input current, and it
    matches the ANN where the plain IF network does not. The two agree on layer 1 (constant input)."""
    images = np.random.default_rng(1).random((4, 32, 32, 3)).astype(np.float32)
    net = layer_graph.build_graph(qcfs_ann)
    reports = {}
    for neuron in ("if", "signed_if"):
        snn = simulation.SpikingNetwork.from_graph(net, timesteps=net.levels, tau=None, neuron=neuron)
        reports[neuron] = verify(qcfs_ann, snn, images, timesteps=net.levels)
    outputs = list(snn.simulate(images, net.levels, return_outputs=True)["outputs"].values())  # the signed network's
    kernels, biases, pool_after, _ = vgg_layers(net)
    for i in range(1, len(outputs)):
        x = tf.nn.avg_pool2d(outputs[i - 1], 2, 2, "VALID") if pool_after[i - 1] else outputs[i - 1]
        current = tf.nn.conv2d(x, kernels[i], 1, "SAME").numpy() + biases[i]
        level = np.clip(np.floor(current * net.levels / net.thresholds[i] + 0.5), 0, net.levels)
        assert np.mean(np.abs(level * net.thresholds[i] / net.levels - outputs[i].numpy()) < 1e-5) > 0.99
    signed = [r["mean_abs_error"] for r in reports["signed_if"]["layers"]]
    plain = [r["mean_abs_error"] for r in reports["if"]["layers"]]
    assert signed[0] == plain[0] < 1e-6
    assert max(signed) < 1e-4 < max(plain)
    burst = simulation.SpikingNetwork.from_graph(net, timesteps=net.levels, tau=None, neuron="signed_if",
                                              max_spikes=net.levels)
    np.testing.assert_allclose(burst(images).numpy(), qcfs_ann(images).numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="signed_if"):
        simulation.SpikingNetwork.from_graph(net, tau=None, neuron="if", max_spikes=2)


def test_compressed_levels_fire_each_qcfs_level_in_one_burst(qcfs_ann):
    """At T = 1 with bursts of up to L, the SNN computes the QCFS ANN exactly, and each layer fires exactly the
    ANN's levels, sum(L * y / lambda): no spike that a later one cancels. Below L / T bursts nothing is compressed,
    and T = 1 stays the first step of a longer run."""
    images = np.random.default_rng(6).random((4, 32, 32, 3)).astype(np.float32)
    net = layer_graph.build_graph(qcfs_ann)
    assert net.levels == 4
    snn = simulation.SpikingNetwork.from_graph(net, timesteps=1, tau=None, neuron="signed_if", max_spikes=4)
    assert [snn.compression(t) for t in (1, 2, 4, 8)] == [4, 2, 1, 0.5]
    result = snn.simulate(images, 1)
    np.testing.assert_allclose(result["logits"][:, 0].numpy(), qcfs_ann(images).numpy(), rtol=1e-4, atol=1e-4)
    layers = [qcfs_ann.get_layer(n.name) for n in snn.neuron_nodes]
    probe = tf.keras.Model(qcfs_ann.inputs, [layer.output for layer in layers])
    levels = [np.sum(y.numpy() * 4 / layer.threshold.numpy(), axis=(1, 2, 3))
              for y, layer in zip(probe(images), layers)]
    np.testing.assert_allclose(result["spikes"][:, 0].numpy(), np.stack(levels, axis=1), rtol=1e-5, atol=1e-3)
    two = simulation.SpikingNetwork.from_graph(net, tau=None, neuron="signed_if", max_spikes=2)
    assert [two.compression(t) for t in (1, 2, 4)] == [1, 2, 1]
    plain = simulation.SpikingNetwork.from_graph(net, tau=None, neuron="if")
    assert plain.compression(1) == 1
    np.testing.assert_array_equal(plain.simulate(images, 1)["logits"][:, 0].numpy(),
                                  plain.simulate(images, 4)["logits"][:, 0].numpy())


def test_verify_names_layers_it_cannot_convert():
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs)
    x = tf.keras.layers.ReLU(name="r")(x)
    x = tf.keras.layers.LeakyReLU(name="leaky")(x)
    x = tf.keras.layers.Conv2DTranspose(4, 3, name="up")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = tf.keras.layers.Dropout(0.1, name="drop")(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="softmax", name="head")(x))
    problems = layer_graph.unconvertible_layers(model)
    assert [p.split(":")[0] for p in problems] == ["leaky", "up", "head"]  # Dropout is removed, not refused


def test_quantisation_threshold_trades_clipping_against_step_size():
    """Uniform activations in [0, 1] at L = 4: rounding to steps of lambda/4 costs lambda * (lambda/4)^2 / 12
    and clipping the top costs (1 - lambda)^3 / 3, minimal at lambda = 8/9; the candidate nearest to it wins.
    Outliers at 5 (0.05 %) pull the 99.99th percentile onto them, but lambda = 5 would round every value below
    0.625 to 0: the choice stays near 8/9, clipping only the outliers."""
    from snn4vision.quantisation import THRESHOLD_PERCENTILES, quantisation_threshold

    uniform = np.random.default_rng(0).random(10_000)
    candidates = np.percentile(uniform, THRESHOLD_PERCENTILES)
    nearest = candidates[np.argmin(np.abs(candidates - 8 / 9))]
    assert quantisation_threshold(uniform, 4) == pytest.approx(nearest)
    with_outliers = np.concatenate([uniform, np.full(5, 5.0)])
    assert np.percentile(with_outliers, 99.99) == pytest.approx(5.0)
    assert abs(quantisation_threshold(with_outliers, 4) - 8 / 9) < 0.02


def test_more_time_never_hurts_with_mixed_levels():
    """The default's shape: QCFS at L = 2 with each pooled map requantised at 4 levels, signed IF bursts of up to
    4. Every node compressed by its own L / T, the SNN's mean logits equal the QCFS ANN's at every T, below, at
    and above each layer's L (uncompressed above L, a layer quantises at T levels: not the ANN)."""
    ann = models.vgg16(4, image_size=32, width=0.125, batch_norm=True, seed=3, activation="qcfs", levels=2,
                       pool_levels=4)
    rng = np.random.default_rng(8)
    for layer in ann.layers:
        if isinstance(layer, QCFS):
            layer.threshold.assign(rng.uniform(0.5, 2.0))
    images = np.random.default_rng(9).random((4, 32, 32, 3)).astype(np.float32)
    net = layer_graph.build_graph(ann)
    assert {n.params.get("levels") for n in net.neurons} == {2, 4}
    snn = simulation.SpikingNetwork.from_graph(net, tau=None, neuron="signed_if", max_spikes=4)
    expected = ann(images).numpy()
    for timesteps in (1, 2, 3, 4, 6, 8, 16):
        assert snn.compressed(timesteps)
        logits = snn.simulate(images, timesteps)["logits"].numpy().mean(axis=1)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4, err_msg=f"T = {timesteps}")

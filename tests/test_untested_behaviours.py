"""Behaviours no test checked (issue 33): BatchNorm folded into bias-free layers, gradients through compressed
levels, the costs of a depthwise convolution."""
import numpy as np
import pytest
import tensorflow as tf

from snn4vision import costs, layer_graph, simulation

L = tf.keras.layers


def bias_free_model():
    """conv, depthwise conv (x2), strided 1x1 conv and dense, none with a bias of its own (as in every ResNet and
    MobileNet), each followed by a BatchNorm whose statistics are far from fresh (one without beta, one without
    gamma)."""
    init = tf.keras.initializers.GlorotUniform(seed=0)
    inputs = tf.keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", use_bias=False, kernel_initializer=init, name="c1")(inputs)
    x = L.ReLU(name="r1")(L.BatchNormalization(name="bn1")(x))
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False, depthwise_initializer=init,
                          name="dw")(x)
    x = L.ReLU(name="r2")(L.BatchNormalization(name="bn2")(x))
    x = L.Conv2D(4, 1, strides=2, use_bias=False, kernel_initializer=init, name="c2")(x)
    x = L.ReLU(name="r3")(L.BatchNormalization(center=False, name="bn3")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(3, use_bias=False, kernel_initializer=init, name="head")(x)
    model = tf.keras.Model(inputs, L.BatchNormalization(scale=False, name="bn4")(x))
    rng = np.random.default_rng(5)
    draw = {"gamma": lambda n: rng.uniform(0.5, 2.0, n), "beta": lambda n: rng.normal(0.3, 0.5, n),
            "moving_mean": lambda n: rng.normal(0.5, 0.5, n), "moving_variance": lambda n: rng.uniform(0.2, 3.0, n)}
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            for weight in layer.weights:
                weight.assign(draw[weight.name.split("/")[-1].split(":")[0]](weight.shape).astype(np.float32))
    return model


def batchnorm_by_hand(bn):
    """``(scale, shift)`` of an inference BatchNorm: ``y = x * scale + shift``."""
    values = {w.name.split("/")[-1].split(":")[0]: w.numpy().astype(np.float64) for w in bn.weights}
    scale = values.get("gamma", 1.0) / np.sqrt(values["moving_variance"] + bn.epsilon)
    return scale, values.get("beta", 0.0) - values["moving_mean"] * scale


def test_batchnorm_folds_exactly_into_layers_without_a_bias_of_their_own():
    """A bias-free conv takes BatchNorm's beta - mean * gamma / sqrt(var + eps) as its new bias: the graph must
    keep that bias (a folding that only adjusts existing biases loses beta and the mean) and reproduce Keras."""
    model = bias_free_model()
    images = np.random.default_rng(1).random((4, 8, 8, 3)).astype(np.float32)
    graph = layer_graph.build_graph(model)
    assert [(n.name, n.op) for n in graph.nodes if n.op in layer_graph.LINEAR_OPS] == [
        ("c1", "conv"), ("dw", "depthwise"), ("c2", "conv"), ("head", "dense")]
    assert all(n.params["bias"] for n in graph.linear)
    scale, shift = batchnorm_by_hand(model.get_layer("bn1"))
    c1 = graph.nodes[1]
    np.testing.assert_allclose(c1.bias, shift, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c1.kernel, model.get_layer("c1").kernel.numpy() * scale, rtol=1e-6, atol=1e-7)
    # depthwise output channel c * 2 + m is input channel c's m-th filter: its own factor
    scale, shift = batchnorm_by_hand(model.get_layer("bn2"))
    np.testing.assert_allclose(graph.nodes[3].kernel,
                               model.get_layer("dw").depthwise_kernel.numpy() * scale.reshape(6, 2), rtol=1e-6)
    np.testing.assert_allclose(graph.nodes[3].bias, shift, rtol=1e-6, atol=1e-6)
    expected = model(images).numpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(layer_graph.rate_forward(graph, images).numpy(), expected, rtol=1e-4, atol=1e-5)
    # and the spiking network takes those biases (it makes a bias variable only where the graph has one)
    snn = simulation.SpikingNetwork.from_graph(graph, timesteps=2, tau=None)
    assert sorted(snn.biases) == ["c1", "c2", "dw", "head"]
    for node in graph.linear:
        np.testing.assert_array_equal(snn.biases[node.name].numpy(), node.bias)


def one_neuron_layer_graph(levels: int = 4):
    """image (2x2x1) -> 1x1 conv -> 4 QCFS/IF neurons of ``levels`` levels -> flatten -> dense to 1 logit."""
    return {"nodes": [
        {"name": "input", "op": "input", "inputs": [], "shape": [2, 2, 1], "params": {}},
        {"name": "c", "op": "conv", "inputs": ["input"], "shape": [2, 2, 1],
         "params": {"kernel_size": [1, 1], "strides": [1, 1], "padding": "SAME", "bias": True}},
        {"name": "n", "op": "neuron", "inputs": ["c"], "shape": [2, 2, 1], "params": {"threshold": 2.0,
                                                                                     "levels": levels}},
        {"name": "f", "op": "flatten", "inputs": ["n"], "shape": [4], "params": {}},
        {"name": "out", "op": "dense", "inputs": ["f"], "shape": [1], "params": {"bias": False}}],
        "output": "out"}


@pytest.mark.parametrize("timesteps", [1, 2, 4])
def test_gradients_through_compressed_levels_by_hand(timesteps):
    """lambda 2, L = 4, signed IF bursts of up to 4: at T = 1 and 2 the levels are compressed (threshold
    lambda T / L), at T = 4 not. Backward, the straight-through estimator is the QCFS ANN's: each neuron's output
    has gradient 1 where 0 < h < lambda and 0 elsewhere, and its spike count over the T steps (L y / lambda
    forward) has gradient L / lambda there, whatever T."""
    snn = simulation.SpikingNetwork(one_neuron_layer_graph(), timesteps=timesteps, tau=None, neuron="signed_if",
                                    max_spikes=4)
    assert snn.compression(timesteps) == 4 / timesteps
    snn.thresholds.assign([2.0])
    snn.kernels["c"].assign([[[[1.0]]]])
    snn.kernels["out"].assign([[1.0], [2.0], [3.0], [4.0]])
    h = np.array([-0.5, 0.3, 1.1, 2.6], np.float32)  # below 0, two inside (0, lambda), above lambda
    image = h.reshape(1, 2, 2, 1)
    inside = np.array([0.0, 1.0, 1.0, 0.0])
    levels = np.clip(np.floor(h * 4 / 2 + 0.5), 0, 4)  # the QCFS levels: 0, 1, 2, 4
    with tf.GradientTape(persistent=True) as tape:
        result = snn.simulate(image, timesteps, training=True)
        logit = tf.reduce_mean(result["logits"])
        spikes = tf.reduce_sum(result["spikes"])
    np.testing.assert_allclose(logit.numpy(), np.dot(levels * 2 / 4, [1, 2, 3, 4]), rtol=1e-6)
    assert float(spikes) == levels.sum()
    # d logit / d h_i = w_i on the inside neurons: through the bias, their sum; through the kernel, x-weighted
    np.testing.assert_allclose(tape.gradient(logit, snn.biases["c"]).numpy(), [np.dot(inside, [1, 2, 3, 4])])
    np.testing.assert_allclose(tape.gradient(logit, snn.kernels["c"]).numpy().ravel(),
                               [np.dot(inside * h, [1, 2, 3, 4])], rtol=1e-6)
    # d logit / d w_i: neuron i's mean output, its QCFS value
    np.testing.assert_allclose(tape.gradient(logit, snn.kernels["out"]).numpy().ravel(), levels * 2 / 4, rtol=1e-6)
    # d spikes / d h_i = L / lambda = 2 on the inside neurons
    np.testing.assert_allclose(tape.gradient(spikes, snn.biases["c"]).numpy(), [2.0 * inside.sum()], rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(spikes, snn.kernels["c"]).numpy().ravel(), [2.0 * np.dot(inside, h)],
                               rtol=1e-6)


def test_depthwise_convolution_costs_by_hand():
    """A depthwise conv of depth multiplier M reads one input channel per output: k x k synapses per output (not
    k x k x C_in as a full conv), so one input value (a spike) reaches k x k x M synapses; its neurons and the
    neurons of the layers around it are charged to the rows that compute their input."""
    graph = layer_graph.build_graph(bias_free_model())
    rows = {r.name: r for r in costs.graph_costs(graph.nodes, graph.output)}
    assert list(rows) == ["c1", "dw", "c2", "head"]
    c1, dw, c2, head = rows.values()
    assert (c1.connections, c1.inputs, c1.neurons, c1.analog) == (8 * 8 * 9 * 3 * 6, 8 * 8 * 3, 8 * 8 * 6, "once")
    # 8x8 positions x 12 outputs (6 channels x 2), 3x3 synapses each; it reads r1's 8x8x6 spikes
    assert (dw.connections, dw.inputs, dw.neurons, dw.sources, dw.analog) == (8 * 8 * 12 * 9, 8 * 8 * 6,
                                                                              8 * 8 * 12, (0,), "")
    assert dw.fan_out == 9 * 2 and dw.feeds == (1,)
    # the strided 1x1 conv: 4x4 positions x 12 inputs x 4 outputs; the head 4 x 3, after the GAP's 4x4x4 adds
    assert (c2.connections, c2.inputs, c2.neurons, c2.sources) == (4 * 4 * 12 * 4, 8 * 8 * 12, 4 * 4 * 4, (1,))
    assert (head.connections, head.inputs, head.neurons, head.adds, head.sources) == (4 * 3, 4, 0, 4 * 4 * 4, (2,))
    # the SNN: 10 spikes of r1 cost 10 x 18 synaptic operations in the depthwise layer
    records = costs.network_activity(list(rows.values()), [("r1", 384), ("r2", 768), ("r3", 64)], [10.0, 0, 0], 4,
                                     synapse=False)
    _, operations, _ = costs.activity_costs(records, 4)
    assert operations[2]["sops"] == 10 * 18 and operations[2]["dense_synops"] == 8 * 8 * 12 * 9 * 4

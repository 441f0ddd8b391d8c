"""The layer graph: any Keras CNN converts node by node, and the graph simulator keeps the VGG results exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from snn4vision import costs, layer_graph, models, neurons, simulation
from snn4vision.stages.convert import verify
from snn4vision.errors import UserError
from snn4vision.layers import QCFS

L = tf.keras.layers
REFERENCE = Path(__file__).resolve().parent / "data" / "spiking_vgg_reference.npz"

#: The cases of spiking_vgg_reference.npz: (QCFS ANN?, simulator settings). The file holds the logits and
#: spike counts of SpikingVGG, the VGG-only simulator this graph simulator replaced, as of commit 5ca3e5d
#: (written by tests/data/make_spiking_reference.py in commit 4d5e19e), for the ANNs of reference_ann.
CASES = {
    "keras_spiking_tau": (False, dict(tau=0.01, dt=0.001)),
    "keras_spiking_no_synapse": (False, dict(tau=None, dt=0.001)),
    "if": (True, dict(tau=None, neuron="if")),
    "signed_if": (True, dict(tau=None, neuron="signed_if")),
    "signed_if_bursts": (True, dict(tau=None, neuron="signed_if", max_spikes=3)),
}


def reference_ann(qcfs: bool, levels: int = 4, pool_before_activation: bool = False, pool_levels: int = 0,
                  pre_pool_levels: int = 0, layer_levels: dict | None = None):
    """A width-0.125 VGG-16 at 32 px with seeded weights and perturbed BatchNorm statistics (and QCFS
    thresholds), exactly as the reference values were made (with the defaults)."""
    model = models.vgg16(5, image_size=32, width=0.125, batch_norm=True, seed=1,
                         activation="qcfs" if qcfs else "relu", levels=levels,
                         pool_before_activation=pool_before_activation, pool_levels=pool_levels,
                         pre_pool_levels=pre_pool_levels, layer_levels=layer_levels)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([g * rng.uniform(0.5, 1.5, g.shape), b + rng.normal(0, 0.1, b.shape),
                               m + rng.normal(0, 0.1, m.shape), v * rng.uniform(0.5, 2, v.shape)])
        if qcfs and isinstance(layer, QCFS):
            layer.quantising.assign(1.0)
            layer.threshold.assign(float(rng.uniform(0.5, 2.0)))
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_graph_simulator_reproduces_the_vgg_simulator_bit_for_bit(case):
    reference = np.load(REFERENCE)
    images = reference["images"]  # six real UC Merced images at 32 px
    qcfs, settings = CASES[case]
    graph = layer_graph.build_graph(reference_ann(qcfs))
    if not qcfs:
        graph = layer_graph.normalise(graph, layer_graph.activation_percentiles(graph, [images]), 1000.0)
    snn = simulation.SpikingNetwork.from_graph(graph, timesteps=6, seed=3, **settings)
    if case == "signed_if_bursts":  # recorded at T = 6 > L = 4 before bursts compressed such a T (the step
        # mechanics are compared here; the compression is checked against the ANN in test_layers)
        assert snn.compressed(6)
        snn.node_compression = lambda timesteps: {n.name: 1.0 for n in snn.neuron_nodes}
    result = snn.simulate(images, 6)
    np.testing.assert_array_equal(result["spikes"].numpy(), reference[f"{case}_spikes"])
    np.testing.assert_array_equal(result["logits"].numpy(), reference[f"{case}_logits"])


def test_a_vgg_pooled_before_its_activations_converts_exactly_with_a_quarter_of_the_neurons_there():
    """Pooling a block's last conv before its QCFS activation: the SNN at T = L still reproduces the ANN, the
    pooled layers have a quarter of the neurons, and the next block reads the pooled map's spikes."""
    reference = np.load(REFERENCE)
    images = reference["images"]
    model = reference_ann(True, levels=2, pool_before_activation=True)
    graph = layer_graph.build_graph(model)
    assert [n.op for n in graph.nodes[3:8]] == ["conv", "avg_pool", "neuron", "conv", "neuron"]
    snn = simulation.SpikingNetwork.from_graph(graph, timesteps=2, tau=None, neuron="signed_if", max_spikes=2)
    report = verify(model, snn, images, timesteps=2)
    assert max(r["mean_abs_error"] for r in report["layers"]) < 1e-5
    np.testing.assert_allclose(snn(images).numpy(), model(images).numpy(), rtol=1e-4, atol=1e-4)
    rows = {r.name: r for r in costs.graph_costs(graph.nodes, graph.output)}
    # block 1 at 32 px, 8 channels: its second layer's neurons sit on the 16x16 pooled map
    assert rows["block1_conv2"].neurons == 16 * 16 * 8 and rows["block1_conv1"].neurons == 32 * 32 * 8
    assert rows["block2_conv1"].inputs == 16 * 16 * 8 and rows["block2_conv1"].fan_out == 9 * 16
    assert rows["block2_conv1"].adds == 32 * 32 * 8  # the pooling's additions, charged to the layer after it


def exact_in_one_step(model, graph, images, max_spikes: int):
    """The signed IF SNN of a QCFS graph at T = 1 with bursts of up to ``max_spikes``, after checking that its
    logits are the ANN's and that each layer fires sum(levels * y / lambda) of its own levels."""
    snn = simulation.SpikingNetwork.from_graph(graph, timesteps=1, tau=None, neuron="signed_if",
                                               max_spikes=max_spikes)
    result = snn.simulate(images, 1)
    np.testing.assert_allclose(result["logits"][:, 0].numpy(), model(images).numpy(), rtol=1e-4, atol=1e-4)
    layers = [model.get_layer(n.name) for n in snn.neuron_nodes]
    outputs = tf.keras.Model(model.inputs, [layer.output for layer in layers])(images)
    levels = [np.sum(y.numpy() * layer.levels / layer.threshold.numpy(), axis=(1, 2, 3))
              for y, layer in zip(outputs, layers)]
    np.testing.assert_allclose(result["spikes"][:, 0].numpy(), np.stack(levels, axis=1), rtol=1e-5, atol=1e-3)
    return snn


def test_a_requantised_pooled_map_converts_exactly_and_costs_one_synapse_per_pooled_spike():
    """A QCFS of 2L levels after each pooling: at T = 1 (each level in one burst) the SNN is the ANN and each
    layer fires sum(levels * y / lambda) of its own levels; at T = L it still reproduces the ANN. The pooling is
    a layer of its own in the costs: one synapse per input (a MAC in the ANN, a SOP per spike in the SNN), its
    pooled neurons charged to it, none of its additions to the conv after it."""
    images = np.load(REFERENCE)["images"]
    model = reference_ann(True, levels=2, pool_levels=4)
    graph = layer_graph.build_graph(model)
    assert [n.op for n in graph.nodes[3:8]] == ["conv", "neuron", "avg_pool", "neuron", "conv"]
    assert graph.levels == 2 and [n.params["levels"] for n in graph.neurons][1:4] == [2, 4, 2]
    snn = exact_in_one_step(model, graph, images, max_spikes=4)
    report = verify(model, snn, images)
    assert report["timesteps"] == 2 and max(r["mean_abs_error"] for r in report["layers"]) < 1e-5
    rows = {r.name: r for r in costs.graph_costs(graph.nodes, graph.output)}
    pool = rows["block1_pool"]  # 32 px, 8 channels, pooled to 16x16
    assert (pool.connections, pool.inputs, pool.fan_out, pool.neurons) == (32 * 32 * 8, 32 * 32 * 8, 1.0, 16 * 16 * 8)
    assert pool.sources == (1,) and rows["block2_conv1"].sources == (2,) and rows["block2_conv1"].adds == 0
    assert rows["block2_conv1"].fan_out == 9 * 16


def test_finer_activations_before_each_pooling_convert_exactly():
    """--pre-pool-levels: layers of three level counts (2, the pooled maps' 4, the activations they read at 8)
    convert exactly at T = 1 (bursts of up to 8) and each fires its own levels' worth of spikes; at T = 8 the
    SNN still reproduces the ANN."""
    images = np.load(REFERENCE)["images"]
    model = reference_ann(True, levels=2, pool_levels=4, pre_pool_levels=8)
    graph = layer_graph.build_graph(model)
    assert graph.levels == 2 and [n.params["levels"] for n in graph.neurons][:6] == [2, 8, 4, 2, 8, 4]
    snn = exact_in_one_step(model, graph, images, max_spikes=8)
    report = verify(model, snn, images, timesteps=8)
    assert max(r["mean_abs_error"] for r in report["layers"]) < 1e-5


def test_per_layer_levels_convert_exactly_and_the_fewest_set_the_graphs_levels():
    """--layer-levels: a layer raised to 4 and one lowered to 1 (a binary neuron) among layers at 2, 8 and 4
    convert exactly at T = 1 (each layer fires its own levels' worth of spikes); the graph's L is the fewest
    (1), and at T = 4 the SNN still reproduces the ANN."""
    images = np.load(REFERENCE)["images"]
    model = reference_ann(True, levels=2, pool_levels=4, pre_pool_levels=8,
                          layer_levels={"block2_qcfs1": 4, "block4_qcfs2": 1})
    graph = layer_graph.build_graph(model)
    levels = {n.name: n.params["levels"] for n in graph.neurons}
    assert graph.levels == 1 and (levels["block1_qcfs1"], levels["block2_qcfs1"], levels["block4_qcfs2"]) == (2, 4, 1)
    snn = exact_in_one_step(model, graph, images, max_spikes=8)
    report = verify(model, snn, images, timesteps=4)
    assert max(r["mean_abs_error"] for r in report["layers"]) < 1e-5


def residual_model(activation: str = "relu", max_pool: bool = True, seed: int = 0):
    """A user's functional CNN: conv-BN-act, a residual block (conv-BN + add), max and average pooling, a
    dense head after Flatten and Dropout; BatchNorm statistics perturbed so that folding matters."""
    def act(name):
        return QCFS(4, 1.0, name=name) if activation == "qcfs" else L.ReLU(name=name)

    init = tf.keras.initializers.GlorotUniform(seed=seed)
    inputs = tf.keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", kernel_initializer=init, name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    a = act("stem_act")(x)
    y = L.Conv2D(8, 3, padding="same", kernel_initializer=init, name="res_conv")(a)
    y = L.BatchNormalization(name="res_bn")(y)
    x = act("res_act")(L.Add(name="res_add")([a, y]))
    x = (L.MaxPooling2D(2, name="max") if max_pool else L.AveragePooling2D(2, name="avg0"))(x)
    x = L.Conv2D(6, 3, strides=2, padding="valid", kernel_initializer=init, name="down")(x)
    x = act("down_act")(x)
    x = L.AveragePooling2D(1, name="avg")(x)
    x = L.Dropout(0.5, name="drop")(L.Flatten(name="flat")(x))
    model = tf.keras.Model(inputs, L.Dense(4, kernel_initializer=init, name="head")(x))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0.1, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2, v.shape)])
        if isinstance(layer, QCFS):
            layer.quantising.assign(1.0)
            layer.threshold.assign(float(rng.uniform(0.8, 1.5)))
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).random((8, 16, 16, 3)).astype(np.float32)


def test_a_users_functional_model_becomes_a_graph_with_batchnorm_folded_and_dropout_removed(images):
    model = residual_model()
    graph = layer_graph.build_graph(model)
    assert [(n.name, n.op) for n in graph.nodes] == [
        ("input", "input"), ("stem", "conv"), ("stem_act", "neuron"), ("res_conv", "conv"), ("res_add", "add"),
        ("res_act", "neuron"), ("max", "max_pool"), ("down", "conv"), ("down_act", "neuron"), ("avg", "avg_pool"),
        ("flat", "flatten"), ("head", "dense")]
    assert graph.nodes[4].inputs == ["stem_act", "res_conv"]
    np.testing.assert_allclose(layer_graph.rate_forward(graph, images).numpy(), model(images).numpy(),
                               rtol=1e-4, atol=1e-5)
    # normalised, the add's branches come at different gains and are rescaled: the logits stay the ANN's
    percentiles = layer_graph.activation_percentiles(graph, [images], 99.0)
    normalised = layer_graph.normalise(graph, percentiles, 250.0)
    assert len(set(normalised.gains.values())) == 3
    logits, activations = layer_graph.rate_forward(normalised, images, return_activations=True)
    np.testing.assert_allclose(logits.numpy(), model(images).numpy(), rtol=1e-4, atol=1e-5)
    for name, value in activations.items():
        assert np.percentile(value.numpy(), 99.0) == pytest.approx(250.0, rel=1e-3), name


def test_a_users_residual_model_converts_and_passes_verify(images):
    model = residual_model()
    graph = layer_graph.build_graph(model)
    graph = layer_graph.normalise(graph, layer_graph.activation_percentiles(graph, [images]), 1000.0)
    snn = simulation.SpikingNetwork.from_graph(graph, timesteps=400, tau=0.01, seed=0)
    labels = model(images).numpy().argmax(1)
    report = verify(model, snn, images, labels, timesteps=400)
    assert [r["layer"] for r in report["layers"]] == ["stem_act", "res_act", "down_act"]  # paired by node
    assert report["unconverted"] == []
    errors = [r["relative_error"] for r in report["layers"]]
    # rate coding, 400 steps of up to 1000 Hz through 10 ms synapses (without one, keras-spiking neurons rectify
    # each step's input and the errors after the add grow to 20-60 %)
    assert errors[0] < 0.03 and max(errors) < 0.1, errors
    assert report["snn_accuracy"] >= 7 / 8  # the ANN's own predictions as labels


def test_a_residual_qcfs_network_converts_exactly_with_signed_bursts(images):
    """At T = L, signed IF neurons with bursts fire each neuron's QCFS level of its mean input, so the SNN's
    mean outputs are the ANN's activations through the residual add and the pooling."""
    model = residual_model("qcfs", max_pool=False)
    snn = simulation.SpikingNetwork.from_graph(layer_graph.build_graph(model), timesteps=4, tau=None,
                                               neuron="signed_if", max_spikes=4)
    report = verify(model, snn, images, timesteps=4)
    assert max(r["mean_abs_error"] for r in report["layers"]) < 1e-5
    np.testing.assert_allclose(snn(images).numpy(), model(images).numpy(), rtol=1e-4, atol=1e-4)


def test_rate_gated_max_pooling_by_hand():
    """A 2x2 window of one channel: the unit with the most output so far passes its current output."""
    graph = {"nodes": [{"name": "input", "op": "input", "inputs": [], "shape": [2, 2, 1], "params": {}},
                       {"name": "c", "op": "conv", "inputs": ["input"], "shape": [2, 2, 1],
                        "params": {"kernel_size": [1, 1], "strides": [1, 1], "padding": "SAME", "bias": True}},
                       {"name": "n", "op": "neuron", "inputs": ["c"], "shape": [2, 2, 1], "params": {"threshold": None}},
                       {"name": "m", "op": "max_pool", "inputs": ["n"], "shape": [1, 1, 1],
                        "params": {"pool_size": [2, 2], "strides": [2, 2], "padding": "VALID"}},
                       {"name": "f", "op": "flatten", "inputs": ["m"], "shape": [1], "params": {}},
                       {"name": "out", "op": "dense", "inputs": ["f"], "shape": [1], "params": {"bias": False}}],
             "output": "out"}
    snn = simulation.SpikingNetwork(graph, timesteps=4, tau=None, neuron="if")
    snn.kernels["c"].assign(np.ones((1, 1, 1, 1), np.float32))
    snn.kernels["out"].assign(np.ones((1, 1), np.float32))
    # thresholds 1, membranes start at 0.5: unit 0 gets 0.6 per step (spikes at steps 1, 3, 4? see below),
    # unit 1 gets 0.9 per step; inputs via the image through a 1x1 identity conv
    image = np.array([0.6, 0.9, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    # unit 0: v 1.1 -> spike (0.1), 0.7, 1.3 -> spike (0.3), 0.9: spikes 1, 0, 1, 0
    # unit 1: v 1.4 -> spike (0.4), 1.3 -> spike (0.3), 1.2 -> spike (0.2), 1.1 -> spike: 1, 1, 1, 1
    # totals so far: step 1 tie (1, 1): the first unit passes, 1; then unit 1 leads and passes 1, 1, 1
    logits = snn.simulate(image, 4)["logits"].numpy()[0, :, 0]
    np.testing.assert_array_equal(logits, [1.0, 1.0, 1.0, 1.0])
    image = np.array([0.9, 0.6, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(snn.simulate(image, 4)["logits"].numpy()[0, :, 0], [1.0, 1.0, 1.0, 1.0])
    image = np.array([0.6, 0.0, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)  # unit 0 alone: its own spikes
    np.testing.assert_array_equal(snn.simulate(image, 4)["logits"].numpy()[0, :, 0], [1.0, 0.0, 1.0, 0.0])
    image = np.array([0.6, 0.45, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    # unit 1: v 0.95, 1.4 -> spike (0.4), 0.85, 1.3 -> spike: 0, 1, 0, 1. Totals: step 1 (1, 0): unit 0 passes 1;
    # step 2 (1, 1) tie: unit 0 passes its 0; step 3 (2, 1): unit 0 passes 1; step 4 (2, 2) tie: unit 0, 0
    np.testing.assert_array_equal(snn.simulate(image, 4)["logits"].numpy()[0, :, 0], [1.0, 0.0, 1.0, 0.0])


def test_lif_neuron_by_hand():
    """leak 0.5, threshold 1, membrane from 0.5, input 0.6: 0.85; 1.025 -> spike (0.025); 0.6125."""
    cell = neurons.neuron("lif", leak=0.5)
    state = cell.initial_state([1], tf.constant(1.0), seed=0)
    counts = []
    for t in range(1, 4):
        state, count, out = cell.step(state, tf.constant([0.6]), 1.0, None, t)
        counts.append(float(count[0]))
    assert counts == [0.0, 1.0, 0.0]
    assert float(state[0][0]) == pytest.approx(0.6125, abs=1e-6)
    with pytest.raises(ValueError, match="leak"):
        neurons.neuron("lif", leak=1.5)
    with pytest.raises(ValueError, match="reset"):
        neurons.neuron("lif", reset="hard")
    with pytest.raises(ValueError, match="must be one of"):
        neurons.neuron("izhikevich")


def test_residual_graph_costs_by_hand():
    """The conv after the add receives the spikes of both branches' neurons; pooling adds go to the next
    linear layer, the add's to the layer after it; the stem reads the image (MACs once)."""
    graph = layer_graph.build_graph(residual_model())
    rows = {r.name: r for r in costs.graph_costs(graph.nodes, graph.output)}
    assert list(rows) == ["stem", "res_conv", "down", "head"]
    assert rows["stem"].connections == 16 * 16 * 9 * 3 * 8 and rows["stem"].analog == "once"
    assert rows["res_conv"].sources == (0,) and rows["res_conv"].connections == 16 * 16 * 9 * 8 * 8
    assert rows["down"].sources == (1,)  # res_act's spikes only: stem_act's reach it through res_act
    assert rows["down"].connections == 3 * 3 * 9 * 8 * 6 and rows["down"].inputs == 8 * 8 * 8
    assert rows["head"].connections == 3 * 3 * 6 * 4
    # neurons: stem_act to stem, res_act to res_conv (the add's linear input), down_act to down
    assert [r.neurons for r in rows.values()] == [16 * 16 * 8, 16 * 16 * 8, 3 * 3 * 6, 0]
    # adds: the residual add (16x16x8) and the max pooling (16x16x8 inputs) go to "down"; the 1x1 average pool
    # (3x3x6 inputs) to the head
    assert rows["down"].adds == 2 * 16 * 16 * 8 and rows["head"].adds == 3 * 3 * 6


def test_bad_graphs_are_refused_in_one_line():
    inputs = tf.keras.Input((8, 8, 3))
    x = L.ReLU(name="r")(L.Conv2D(4, 3, padding="same", name="c")(inputs))
    y = L.BatchNormalization(name="bn_after_relu")(x)
    model = tf.keras.Model(inputs, L.Dense(2, name="head_on_map")(y))
    with pytest.raises(UserError) as error:
        layer_graph.build_graph(model)
    assert "bn_after_relu: BatchNorm folds only into a conv or dense layer" in str(error.value)
    assert "head_on_map: a Dense layer on a feature map" in str(error.value)
    # folding BatchNorm into a conv whose raw output another layer also reads would change that layer's input
    inputs = tf.keras.Input((8, 8, 3))
    c = L.Conv2D(4, 3, padding="same", name="shared")(inputs)
    x = L.ReLU()(L.Add()([c, L.BatchNormalization(name="bn_of_shared")(c)]))
    model = tf.keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    with pytest.raises(UserError, match="bn_of_shared: BatchNorm folds only into a conv or dense layer whose output "
                                        "nothing else reads"):
        layer_graph.build_graph(model)
    linear = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.Flatten(), L.Dense(2)])
    with pytest.raises(UserError, match="no ReLU or QCFS activation"):
        layer_graph.build_graph(linear)

"""The op registry: an op defined here, in one class, runs through the rate forward pass, the spiking simulator,
the costs, the NIR export and the keras-spiking model; and every op the converters make is registered and says
what it can do."""
import nir
import numpy as np
import pytest
import tensorflow as tf

from snn4vision import costs, layer_graph, ops, simulation
from snn4vision.errors import UserError
from snn4vision.layer_graph import LayerGraph, Node
from snn4vision.layers import QCFS

L = tf.keras.layers


class DoubleOp(ops.GraphOp):
    """Twice its input, ``(batch, ...) -> (batch, ...)``: a toy elementwise op, defined in this test only."""

    name = "double"
    scale_free = True  # 2 (g x) = g (2 x): gains pass through it
    unsupported = {"kernel_shape": "doubling has no kernel"}

    def forward(self, node, xs, kernel=None, bias=None):
        return 2.0 * xs[0]

    def adds(self, node, input_shapes):
        return int(np.prod(node.shape))  # one multiplication per value, counted with the additions

    def to_nir(self, node, export):
        sources = export.sources(node)
        factor = ops.shared_factor(sources)
        shape = (node.shape[2], node.shape[0], node.shape[1])  # NIR's maps are channels first
        export.nodes[node.name] = nir.Scale(scale=np.full(shape, 2.0, np.float32))
        export.feed(node.name, sources, factor)
        export.terms[node.name] = [ops.Term(node.name, factor)]

    def keras_spiking(self, node, model, xs, weights):
        return self.time_distributed(node, L.Rescaling(2.0), xs[0])[1]


@pytest.fixture
def double():
    ops.registers(DoubleOp)
    yield ops.OPS["double"]
    del ops.OPS["double"]


#: The image: one channel, 2x2. A 1x1 conv makes channels x and -x; QCFS with lambda = 2 and L = 4 gives
#: lambda * clip(floor(x / lambda * L + 1/2) / L, 0, 1): 0.3 -> floor(1.1) = 1 -> 0.5, 0.8 -> 2 -> 1.0,
#: 1.6 -> 3 -> 1.5, 2.4 -> floor(5.3) = 5 -> clipped to 4 -> 2.0; channel -x: all 0.
IMAGE = np.asarray([[0.3, 0.8], [1.6, 2.4]], np.float32).reshape(1, 2, 2, 1)
QCFS_OUT = np.asarray([0.5, 1.0, 1.5, 2.0])
LOGITS_KERNEL = np.asarray([[1.0, 0.0, 2.0], [5.0, 1.0, 0.0]], np.float32)
# doubled and averaged over the map: channel 0 is 2 * 5.0 / 4 = 2.5, channel 1 is 0; the logits 2.5 * row 0
LOGITS = np.asarray([[2.5, 0.0, 5.0]])


def toy_graph(threshold=2.0, levels=4) -> LayerGraph:
    """input (2, 2, 1) -> 1x1 conv (2, 2, 2) -> neuron -> double -> global average pooling (2,) -> dense (3,)."""
    nodes = [
        Node("input", "input", [], (2, 2, 1)),
        Node("conv", "conv", ["input"], (2, 2, 2), {"kernel_size": [1, 1], "strides": [1, 1], "padding": "VALID",
                                                   "bias": False},
             kernel=np.asarray([1.0, -1.0], np.float32).reshape(1, 1, 1, 2), bias=np.zeros(2, np.float32)),
        Node("neuron", "neuron", ["conv"], (2, 2, 2),
             {"threshold": threshold} | ({"levels": levels} if levels else {})),
        Node("double", "double", ["neuron"], (2, 2, 2)),
        Node("gap", "gap", ["double"], (2,)),
        Node("logits", "dense", ["gap"], (3,), {"bias": False}, kernel=LOGITS_KERNEL, bias=np.zeros(3, np.float32)),
    ]
    return LayerGraph(nodes, "logits", levels=levels)


def test_a_toy_op_runs_in_the_rate_forward_pass_and_the_snn_reproduces_it_at_t_equal_l(double):
    graph = toy_graph()
    logits, activations = layer_graph.rate_forward(graph, IMAGE, return_activations=True)
    np.testing.assert_allclose(activations["neuron"].numpy()[0, :, :, 0].ravel(), QCFS_OUT)
    np.testing.assert_array_equal(activations["neuron"].numpy()[..., 1], 0.0)
    np.testing.assert_allclose(logits.numpy(), LOGITS, rtol=1e-6)
    snn = simulation.SpikingNetwork.from_graph(graph, timesteps=4, tau=None, neuron="if")
    result = snn.simulate(IMAGE, 4)
    # IF neurons from lambda / 2, reset by subtraction, at T = L: 1, 2, 3 and 4 spikes (the QCFS levels)
    assert result["spikes"].numpy().sum() == 1 + 2 + 3 + 4
    np.testing.assert_allclose(snn(IMAGE).numpy(), LOGITS, rtol=1e-6)


def test_a_toy_op_is_costed_by_hand(double):
    graph = toy_graph()
    rows = costs.graph_costs(graph.nodes, graph.output)
    assert [r.name for r in rows] == ["conv", "logits"]
    conv, logits = rows
    # 2x2 positions x 2 channels, one input channel, a 1x1 kernel; it reads the image (MACs once)
    assert (conv.connections, conv.inputs, conv.neurons, conv.adds, conv.analog) == (8, 4, 8, 0, "once")
    assert (conv.weights, conv.kernel, conv.positions, conv.channels) == (2, 1, 4, 2)
    # 2 inputs x 3 outputs; the double's 8 multiplications and the pooling's 8 additions charged to it, and the
    # neuron layer's spikes reach it through both
    assert (logits.connections, logits.inputs, logits.adds, logits.sources, logits.analog) == (6, 2, 16, (0,), "")


def test_a_toy_op_is_exported_to_nir_by_hand(double, tmp_path):
    snn = simulation.SpikingNetwork.from_graph(toy_graph(), timesteps=4, tau=None, neuron="if")
    graph = snn.export_nir(tmp_path / "toy.nir")
    read = nir.read(tmp_path / "toy.nir")
    assert isinstance(read.nodes["double"], nir.Scale)
    np.testing.assert_array_equal(read.nodes["double"].scale, np.full((2, 2, 2), 2.0))
    assert sorted(map(tuple, read.edges)) == sorted([
        ("input", "conv"), ("conv", "neuron"), ("neuron", "double"), ("double", "gap"), ("gap", "gap_flatten"),
        ("gap_flatten", "logits"), ("logits", "output")])
    np.testing.assert_allclose(read.nodes["neuron"].v_threshold, 2.0)
    # a spike of 1 stands for lambda = 2, the sum pooling's 1 / 4 is left to the logits: weights x 2 / 4
    np.testing.assert_allclose(read.nodes["logits"].weight, LOGITS_KERNEL.T * 0.5)
    # run as NIR reads it: the mean over the 4 steps of affine(sum pool(2 x spikes)) is the rate logits
    spikes = 1 + 2 + 3 + 4  # channel 0's, over the run; channel 1 never fires
    pooled = np.asarray([2.0 * spikes / 4, 0.0])
    np.testing.assert_allclose(np.asarray(graph.nodes["logits"].weight) @ pooled, LOGITS[0], rtol=1e-6)


def test_a_toy_ops_keras_spiking_equivalent_runs_to_the_simulators_logits(double):
    relu = toy_graph(threshold=None, levels=None)
    relu = layer_graph.normalise(relu, [0.5], 1000.0)  # 2000 Hz per unit: several spikes in 6 steps
    snn = simulation.SpikingNetwork.from_graph(relu, timesteps=6, tau=0.005, seed=3)
    ours = snn.simulate(IMAGE, 6)["logits"].numpy()
    naive = simulation.keras_spiking_model(snn)(np.repeat(IMAGE[:, None], 6, axis=1), training=False).numpy()
    assert np.abs(ours).max() > 0
    np.testing.assert_array_equal(ours, naive)


def test_an_unregistered_op_is_named():
    graph = toy_graph()  # "double" is not registered here
    with pytest.raises(ValueError, match="unknown operation 'double'"):
        layer_graph.rate_forward(graph, IMAGE)


def test_an_unsupported_capability_is_one_user_error_naming_the_node():
    node = Node("pool", "max_pool", ["x"], (1, 1, 1), {"pool_size": [2, 2], "strides": [2, 2], "padding": "VALID"})
    with pytest.raises(UserError, match="pool: keras-spiking has no equivalent of max pooling"):
        ops.op_of(node).keras_spiking(node, None, [], {})
    with pytest.raises(UserError, match="pool: a pooling has no kernel"):
        ops.op_of(node).kernel_shape(node, (2, 2, 1))


#: The methods that implement each capability (the spiking step of a stateless op is its forward pass).
METHODS = {"forward": ["forward"], "kernel_shape": ["kernel_shape"], "cost": ["synapses", "adds"],
           "to_nir": ["to_nir"], "keras_spiking": ["keras_spiking"]}


@pytest.mark.parametrize("name", sorted(ops.OPS) + ["double"])
def test_every_op_implements_each_capability_or_declares_it_unsupported(name):
    op = ops.OPS[name] if name in ops.OPS else DoubleOp()
    assert set(op.unsupported) <= set(ops.CAPABILITIES)
    for capability in ops.CAPABILITIES:
        methods = METHODS.get(capability, ["spiking_step"] if op.stateful else ["forward"])
        implemented = any(getattr(type(op), m) is not getattr(ops.GraphOp, m) for m in methods)
        assert implemented != (capability in op.unsupported), (name, capability)
    if op.linear:
        assert type(op).synapses is not ops.GraphOp.synapses and type(op).kernel_shape is not ops.GraphOp.kernel_shape


def _models():
    """Models that hold every layer type with a converter (ReLU and QCFS networks apart: they do not mix)."""
    inputs = tf.keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(x))
    x = L.ReLU()(L.ZeroPadding2D(1)(x))
    y = L.Activation("relu")(L.DepthwiseConv2D(3, padding="same")(x))
    x = L.Activation("linear")(L.Add()([x, y]))
    x = L.Concatenate()([x, L.Dropout(0.1)(x)])
    x = L.SpatialDropout2D(0.1)(L.GaussianDropout(0.1)(L.GaussianNoise(0.1)(x)))
    x = L.MaxPooling2D(2)(L.AveragePooling2D(2, padding="same")(x))
    a = L.Flatten()(L.Reshape((2, 2, 8))(x))
    b = L.GlobalAveragePooling2D()(x)
    relu = tf.keras.Model(inputs, L.Add()([L.Dense(3)(a), L.Dense(3)(b)]))
    qcfs = tf.keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(QCFS(levels=2)(L.Conv2D(4, 3)(inputs)))))
    return relu, qcfs


def test_every_op_the_converters_make_is_registered():
    models = _models()
    layer_types = {type(layer) for model in models for layer in model.layers}
    assert set(layer_graph.CONVERTERS) <= layer_types  # a new converter needs a layer here
    made = {node.op for model in models for node in layer_graph.build_graph(model, trained=False).nodes}
    assert made <= set(ops.OPS)
    assert made == set(ops.OPS)  # and every registered op is one a Keras layer converts to


def test_a_converter_that_makes_an_unregistered_op_is_refused_by_name():
    class Halve(L.Layer):
        def call(self, x):
            return x / 2

    @layer_graph.converts(Halve)
    class HalveConverter(layer_graph.LayerConverter):
        def convert(self, inputs):
            return self.add("halve", inputs)

    try:
        inputs = tf.keras.Input((4,))
        model = tf.keras.Model(inputs, L.Dense(2)(Halve()(L.Dense(4, activation="relu")(inputs))))
        with pytest.raises(ValueError, match="HalveConverter adds a 'halve' node, but no op of that name"):
            layer_graph.build_graph(model)
    finally:
        del layer_graph.CONVERTERS[Halve]

"""NIR export: the written file, read back with nir.read, holds the model (shapes, parameters, edges), and a
reference interpreter of NIR's primitives written here in NumPy (not our TensorFlow simulator) runs it to the
same per-step outputs and per-layer spike counts as SpikingNetwork.

Weights, thresholds and pixels are rounded to multiples of powers of two small enough that every sum is exact in
float32 whatever its order: the two simulators must then agree spike for spike."""
import nir
import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view

from snn4vision import layer_graph, models
from snn4vision.errors import UserError
from snn4vision.layers import QCFS
from snn4vision.nir_io import nir_problems, to_nir, write_nir
from snn4vision.simulation import SpikingNetwork

L = tf.keras.layers


# --------------------------------------------------------------------------
# A reference interpreter of the NIR primitives used here, (batch, channels, height, width) in float32
# --------------------------------------------------------------------------
def _windows(x, kernel, stride, padding):
    x = np.pad(x, [(0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2])
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::stride[0], ::stride[1]]  # (b, c, ho, wo, kh, kw)


def _pair(value):
    return tuple(int(v) for v in np.broadcast_to(np.asarray(value), (2,)))


def _node_output(node, x):
    if isinstance(node, nir.Conv2d):
        groups, weight = int(node.groups), np.asarray(node.weight, np.float32)
        win = _windows(x, weight.shape[2:], _pair(node.stride), _pair(node.padding))
        per_group = weight.shape[0] // groups
        outs = [np.einsum("bchwij,ocij->bohw", win[:, g * weight.shape[1]:(g + 1) * weight.shape[1]],
                          weight[g * per_group:(g + 1) * per_group]) for g in range(groups)]
        return np.concatenate(outs, axis=1) + np.asarray(node.bias, np.float32)[None, :, None, None]
    if isinstance(node, nir.SumPool2d):
        return _windows(x, _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)).sum(axis=(4, 5))
    if isinstance(node, nir.Flatten):
        return x.reshape(len(x), -1)
    if isinstance(node, nir.Affine):
        return x @ np.asarray(node.weight, np.float32).T + np.asarray(node.bias, np.float32)
    if isinstance(node, nir.Scale):
        return x * np.asarray(node.scale, np.float32)
    raise AssertionError(f"no rule for {type(node).__name__}")


def run_nir(graph, images, timesteps):
    """Per-step outputs ``(b, T, classes)`` and spikes per neuron node ``{name: (b,)}`` of ``graph`` on ``images``
    ``(b, h, w, c)`` held for ``timesteps`` steps. Edges into a node are summed; a neuron fires when its membrane
    reaches the threshold and resets as its metadata says; LIF decays by exp(-dt / tau) and takes r dt / tau of its
    input."""
    sources = {name: [a for a, b in graph.edges if b == name] for name in graph.nodes}
    order, done = [], {"input"}
    while len(order) < len(graph.nodes) - 1:
        for name in graph.nodes:
            if name not in done and sources[name] and all(s in done for s in sources[name]):
                order.append(name)
                done.add(name)
    dt = float(graph.metadata["dt"])
    batch = len(images)
    neurons = {n: node for n, node in graph.nodes.items() if isinstance(node, (nir.IF, nir.LIF))}
    membranes = {n: np.full((batch, *node.v_threshold.shape), node.metadata["v_initial"], np.float32)
                 for n, node in neurons.items()}
    spikes = {n: np.zeros(batch) for n in neurons}
    outputs = []
    for _ in range(timesteps):
        values = {"input": np.asarray(images, np.float32).transpose(0, 3, 1, 2)}
        for name in order:
            node = graph.nodes[name]
            x = sum(values[s] for s in sources[name])
            if name in neurons:
                if isinstance(node, nir.LIF):  # coefficients to float32 as our simulator has them
                    decay, gain = np.float32(np.exp(-dt / node.tau)), np.float32(node.r * dt / node.tau)
                    v = decay * membranes[name] + gain * x
                else:
                    v = membranes[name] + node.r * x
                z = (v >= node.v_threshold).astype(np.float32)
                membranes[name] = v - z * node.v_threshold if node.metadata["reset"] == "subtract" else v * (1 - z)
                spikes[name] += z.reshape(batch, -1).sum(axis=1)
                values[name] = z
            elif isinstance(node, nir.Output):
                values[name] = x
            else:
                values[name] = _node_output(node, x)
        outputs.append(values["output"])
    return np.stack(outputs, axis=1), spikes


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
def _with_thresholds(model, seed=0):
    """Quantising QCFS layers, each with the threshold that its input's 99th percentile on random images has
    (as calibration after training would give): random weights then still drive the last layers."""
    images = np.random.default_rng(seed).random((8, *model.input_shape[1:])).astype(np.float32)
    for layer in model.layers:
        if isinstance(layer, QCFS):
            layer.quantising.assign(1.0)
            inputs = tf.keras.Model(model.inputs, layer.input)(images).numpy()
            layer.threshold.assign(float(max(np.percentile(inputs, 99), 0.05)))
    return model


def _odd_cnn():
    """Zero padding before a 'valid' conv, a depthwise conv, a stride-2 'same' conv on an even map (asymmetric
    padding in Keras), average pooling, Flatten and Dense: the layouts NIR changes."""
    tf.keras.utils.set_random_seed(4)
    inputs = tf.keras.Input((12, 12, 3))
    x = L.ZeroPadding2D(1)(inputs)
    x = L.Conv2D(6, 3, padding="valid")(x)
    x = QCFS(levels=4)(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = QCFS(levels=4)(x)
    x = L.Conv2D(8, 3, strides=2, padding="same")(x)
    x = QCFS(levels=4)(x)
    x = L.AveragePooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(16)(x)
    x = QCFS(levels=4)(x)
    outputs = L.Dense(5)(x)
    return _with_thresholds(tf.keras.Model(inputs, outputs), seed=1)


CASES = {
    "vgg16": lambda: _with_thresholds(models.vgg16(4, image_size=16, width=0.125, seed=2, activation="qcfs",
                                                   levels=4)),
    "vgg16, pooled before its activations": lambda: _with_thresholds(models.vgg16(
        4, image_size=16, width=0.125, seed=2, activation="qcfs", levels=2, pool_before_activation=True)),
    "resnet20": lambda: _with_thresholds(models.resnet("resnet20", 4, image_size=16, width=0.5, seed=1,
                                                       activation="qcfs", levels=4)),
    "flatten, depthwise, padding": _odd_cnn,
}


def _dyadic(graph):
    """Weights to multiples of 1/256, thresholds to multiples of 1/64 (in place)."""
    for node in graph.linear:
        node.kernel = np.round(node.kernel * 256) / 256
        node.bias = None if node.bias is None else np.round(node.bias * 256) / 256
    for node in graph.neurons:
        node.params["threshold"] = max(float(np.round(node.params["threshold"] * 64) / 64), 1 / 64)
    return graph


@pytest.fixture(scope="module")
def images():
    return np.round(np.random.default_rng(3).random((6, 16, 16, 3)) * 16).astype(np.float32) / 16


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_a_written_nir_file_runs_to_our_outputs_and_spike_counts(case, neuron, images, tmp_path):
    model = CASES[case]()
    size = model.input_shape[1]
    images = images[:, :size, :size]
    snn = SpikingNetwork.from_graph(_dyadic(layer_graph.build_graph(model)), timesteps=16, tau=None, neuron=neuron,
                                    leak=0.75)
    write_nir(tmp_path / "snn.nir", to_nir(snn))
    graph = nir.read(tmp_path / "snn.nir")
    theirs, spikes = run_nir(graph, images, 16)
    ours = snn.simulate(images, 16)
    assert sum(s.sum() > 0 for s in spikes.values()) >= 4  # spikes cross several layers: a comparison, not 0 = 0
    np.testing.assert_array_equal(np.stack([spikes[n.name] for n in snn.neuron_nodes], axis=1),
                                  ours["spikes"].numpy().sum(axis=1))
    np.testing.assert_allclose(theirs, ours["logits"].numpy(), rtol=1e-4, atol=1e-4)


def test_the_file_holds_the_model_in_nir_layouts(tmp_path):
    """Shapes, parameters and edges of a VGG-16 checked against the model's own weights, by hand."""
    model = CASES["vgg16"]()
    graph = layer_graph.build_graph(model)
    snn = SpikingNetwork.from_graph(graph, timesteps=4, tau=None, neuron="if", readout_steps=8)
    write_nir(tmp_path / "snn.nir", to_nir(snn, timesteps=4))
    read = nir.read(tmp_path / "snn.nir")
    convs = [n for n in graph.nodes if n.op == "conv"]
    neurons = graph.neurons
    assert [type(read.nodes[c.name]).__name__ for c in convs] == ["Conv2d"] * 13
    assert sum(isinstance(n, nir.IF) for n in read.nodes.values()) == 13
    # the first conv takes the image itself: its kernel (kh, kw, in, out) becomes (out, in, kh, kw) unscaled
    first = read.nodes[convs[0].name]
    np.testing.assert_array_equal(first.weight, convs[0].kernel.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(first.bias, convs[0].bias)
    assert tuple(first.padding) == (1, 1) and tuple(first.stride) == (1, 1)
    # the second conv reads spikes of 1 that stand for the first neuron layer's threshold
    threshold = neurons[0].params["threshold"]
    np.testing.assert_allclose(read.nodes[convs[1].name].weight, convs[1].kernel.transpose(3, 2, 0, 1) * threshold,
                               rtol=1e-6)
    first_if = read.nodes[neurons[0].name]
    assert first_if.v_threshold.shape == (convs[0].shape[2], 16, 16)
    np.testing.assert_allclose(first_if.v_threshold, threshold, rtol=1e-6)
    assert first_if.metadata["v_initial"] == pytest.approx(threshold / 2)
    assert first_if.metadata["reset"] == "subtract"
    # a 2x2 average pooling: a SumPool2d, its 1/4 in the next conv with the threshold before it
    pool = next(n for n in graph.nodes if n.op == "avg_pool")
    assert isinstance(read.nodes[pool.name], nir.SumPool2d) and list(read.nodes[pool.name].kernel_size) == [2, 2]
    after_pool = next(n for n in graph.nodes if n.inputs == [pool.name])
    before_pool = next(n for n in graph.nodes if n.name == pool.inputs[0])
    np.testing.assert_allclose(read.nodes[after_pool.name].weight,
                               after_pool.kernel.transpose(3, 2, 0, 1) * before_pool.params["threshold"] / 4,
                               rtol=1e-6)
    # global average pooling: a sum over the 1x1 map of the last block, flattened, into the bias-free logits
    logits = graph.nodes[-1]
    np.testing.assert_allclose(read.nodes[logits.name].weight, logits.kernel.T * neurons[-1].params["threshold"],
                               rtol=1e-6)
    np.testing.assert_array_equal(read.nodes[logits.name].bias, 0)
    # the edges are the model's chain: input, conv, IF, ..., SumPool2d, Flatten, Affine, output
    expected, previous = [], "input"
    for node in graph.nodes[1:]:
        name = node.name
        expected.append((previous, name))
        previous = f"{name}_flatten" if node.op == "gap" else name
        if node.op == "gap":
            expected.append((name, previous))
    expected.append((previous, "output"))
    assert sorted(map(tuple, read.edges)) == sorted(expected)
    assert read.metadata["timesteps"] == 4 and read.metadata["dt"] == pytest.approx(snn.dt)
    assert read.metadata["readout_steps"] == 4  # a read-out longer than T is all T steps
    assert list(read.nodes["input"].input_type["input"]) == [3, 16, 16]


def test_the_asymmetric_same_padding_of_a_stride_2_conv_becomes_a_shifted_kernel():
    """Keras pads a 3x3 stride-2 'same' conv on 16 pixels with 0 rows above and 1 below: NIR gets a 4x4 kernel
    whose first row and column are zero, padded by 1 on every side."""
    model = CASES["flatten, depthwise, padding"]()
    graph = layer_graph.build_graph(model)
    strided = next(n for n in graph.nodes if n.op == "conv" and n.params["strides"] == [2, 2])
    node = to_nir(SpikingNetwork.from_graph(graph, timesteps=2, tau=None, neuron="if")).nodes[strided.name]
    assert node.weight.shape[2:] == (4, 4) and tuple(node.padding) == (1, 1)
    assert not node.weight[:, :, 0].any() and not node.weight[:, :, :, 0].any()


def test_lif_time_constants_give_the_leak_per_step():
    model = CASES["vgg16"]()
    snn = SpikingNetwork.from_graph(layer_graph.build_graph(model), timesteps=2, tau=None, neuron="lif", leak=0.8,
                                    dt=0.002)
    node = next(n for n in to_nir(snn).nodes.values() if isinstance(n, nir.LIF))
    np.testing.assert_allclose(np.exp(-0.002 / node.tau), 0.8)
    np.testing.assert_allclose(node.r * 0.002 / node.tau, 1.0)  # an input of x raises the membrane by x
    assert node.metadata["reset"] == "subtract"
    no_leak = SpikingNetwork.from_graph(layer_graph.build_graph(model), timesteps=2, tau=None, neuron="lif", leak=1.0)
    assert not any(isinstance(n, nir.LIF) for n in to_nir(no_leak).nodes.values())  # an IF neuron: exported as IF
    assert sum(isinstance(n, nir.IF) for n in to_nir(no_leak).nodes.values()) == 13


def test_what_nir_cannot_express_is_refused_in_one_line_naming_the_fix():
    model = CASES["vgg16"]()
    graph = layer_graph.build_graph(model)
    signed = SpikingNetwork.from_graph(graph, timesteps=4, tau=None, neuron="signed_if", max_spikes=2)
    with pytest.raises(UserError) as error:
        to_nir(signed)
    message = str(error.value)
    assert "\n" not in message and message.count("--approximate") == 2
    assert "negative spikes" in message and "bursts of up to 2" in message
    relu = models.vgg16(4, image_size=16, width=0.125, seed=2)
    keras_spiking = SpikingNetwork.from_graph(layer_graph.build_graph(relu), timesteps=4, tau=0.01)
    problems = nir_problems(keras_spiking)
    assert any("relu(input)" in p and "--activation qcfs" in p for p in problems)
    assert any("low-pass" in p for p in problems)
    inputs = tf.keras.Input((8, 8, 3))
    pooled = L.MaxPooling2D(2)(QCFS(levels=2)(L.Conv2D(4, 3, padding="same")(inputs)))
    outputs = L.Dense(3)(L.GlobalAveragePooling2D()(pooled))
    with_max = SpikingNetwork.from_graph(layer_graph.build_graph(tf.keras.Model(inputs, outputs)), timesteps=2,
                                         tau=None, neuron="if")
    assert [p for p in nir_problems(with_max) if "max pooling" in p and "AveragePooling2D" in p]
    assert not nir_problems(SpikingNetwork.from_graph(graph, timesteps=4, tau=None, neuron="if"))
    padded = L.Conv2D(4, 3)(L.ZeroPadding2D(((0, 1), (0, 1)))(inputs))  # uneven: not a conv's own padding
    uneven = tf.keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(QCFS(levels=2)(padded))))
    with_pad = SpikingNetwork.from_graph(layer_graph.build_graph(uneven), timesteps=2, tau=None, neuron="if")
    assert [p for p in nir_problems(with_pad) if "ZeroPadding2D with equal padding" in p]


@pytest.mark.parametrize("case", ["vgg16", "vgg16, pooled before its activations", "resnet20",
                                  "flatten, depthwise, padding"])
def test_sinabs_runs_the_written_file_to_our_spike_counts(case, images, tmp_path):
    """sinabs (its own NIR importer, wired by nirtorch) on the file read back: spike for spike what our simulator
    gives, residual adds, Scale nodes, the shifted kernels of uneven padding and depthwise convs (written as dense
    ones) included."""
    pytest.importorskip("sinabs")
    from snn4vision.nir_io import run_in_sinabs

    model = CASES[case]()
    size = model.input_shape[1]
    snn = SpikingNetwork.from_graph(_dyadic(layer_graph.build_graph(model)), timesteps=8, tau=None, neuron="if")
    write_nir(tmp_path / "snn.nir", to_nir(snn))
    theirs = run_in_sinabs(nir.read(tmp_path / "snn.nir"), images[:, :size, :size], 8, batch_size=4)
    ours = snn.simulate(images[:, :size, :size], 8)
    np.testing.assert_array_equal(np.stack([theirs["spikes"][n.name] for n in snn.neuron_nodes], axis=1),
                                  ours["spikes"].numpy().sum(axis=1))
    np.testing.assert_allclose(theirs["logits"], ours["logits"].numpy(), rtol=1e-4, atol=1e-4)


def test_the_sinabs_check_refuses_a_grouped_conv_in_one_line(images):
    """A NIR file from elsewhere may hold a grouped conv, which sinabs's importer builds with the wrong input
    channels: refused, not run to wrong counts. (Ours writes depthwise convs as dense ones.)"""
    pytest.importorskip("sinabs")
    from snn4vision.nir_io import run_in_sinabs

    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((4, 1, 3, 3), np.float32), stride=1, padding=(1, 1),
                      dilation=1, groups=2, bias=np.zeros(4, np.float32))
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2, 4, 4])}), "conv": conv,
                                "output": nir.Output(output_type={"output": np.array([4, 4, 4])})},
                         edges=[("input", "conv"), ("conv", "output")], metadata={"dt": 1.0})
    with pytest.raises(UserError, match="grouped conv"):
        run_in_sinabs(graph, images[:, :4, :4, :2], 2)


def test_a_depthwise_conv_is_written_as_the_dense_conv_it_equals_and_passes_nirs_type_check(tmp_path):
    """nir 1.0.7 and later type-check a file on read and take a conv's input channels from its weight, so a
    grouped conv (groups = in) was refused there. Output channel c * multiplier + m reads input channel c only."""
    model = CASES["flatten, depthwise, padding"]()
    snn = SpikingNetwork.from_graph(layer_graph.build_graph(model), timesteps=2, tau=None, neuron="if")
    write_nir(tmp_path / "snn.nir", to_nir(snn))
    graph = nir.read(tmp_path / "snn.nir")  # type-checked on the nir versions that check
    if hasattr(graph, "check_types"):
        assert graph.check_types()
    depthwise = next(layer for layer in model.layers if isinstance(layer, L.DepthwiseConv2D))
    kernel = depthwise.get_weights()[0]  # (kh, kw, in, multiplier)
    kh, kw, cin, mult = kernel.shape
    convs = [n for n in graph.nodes.values() if isinstance(n, nir.Conv2d) and n.weight.shape[0] == cin * mult
             and n.weight.shape[1] == cin and n.weight.shape[2:] == (kh, kw)]
    assert len(convs) == 1 and int(convs[0].groups) == 1
    weight = np.asarray(convs[0].weight)
    scale = weight[0, 0].ravel() @ kernel[:, :, 0, 0].ravel() / (kernel[:, :, 0, 0] ** 2).sum()  # the node's gain
    for c in range(cin):
        for m in range(mult):
            assert not np.delete(weight[c * mult + m], c, axis=0).any()
            np.testing.assert_allclose(weight[c * mult + m, c], scale * kernel[:, :, c, m], rtol=1e-5, atol=1e-6)

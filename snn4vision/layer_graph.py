"""The layer graph of a Keras CNN, the converters that build it, and its exact folding for conversion.

:func:`build_graph` walks a functional or Sequential ``tf.keras.Model`` and
turns each layer into graph nodes through the :class:`LayerConverter`
registered for the layer's type (:func:`converts`). A converter declares the
layer arguments it does not support (``unsupported``); a layer without a
converter, or with such an argument, stops the conversion with one line that
names it. BatchNorm is folded exactly into the conv or dense layer before it,
Dropout is removed, and ReLU / ``Activation("relu")`` / QCFS become neuron
nodes.

Rate normalisation (:func:`normalise`) gives every neuron node a gain in Hz
per unit of ANN activation. Because ``relu(g * h) = g * relu(h)`` for
``g > 0``, a gain becomes a rescaling of the weights that feed the neuron
(:func:`scale_plan`); where tensors of different gains meet (a residual add)
the smaller branch is rescaled. The graph with rate neurons
(:func:`rate_forward`) reproduces the ANN's logits.

Max pooling has no exact spiking form. A ``MaxPooling2D`` is kept in the ANN
(rate forward: exact) and becomes a *rate-gated* max pooling in the SNN: in
each window, the unit with the most output so far passes its current output
(the approach of snntoolbox); it equals max pooling of the rates once the
rates have settled.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from .errors import UserError
from .layers import QCFS
from .ops import LINEAR_OPS, OPS, SCALE_FREE_OPS, op_of  # noqa: F401  (the op names, kept here for their readers)

ONE = "1"  # the scale of the image and of the logits


@dataclass
class Node:
    """One node of the graph. ``shape``: its output without the batch axis; ``params``: JSON-able settings;
    ``kernel``/``bias``: the folded weights of a linear node (ANN units, gains not applied)."""

    name: str
    op: str
    inputs: list
    shape: tuple
    params: dict = field(default_factory=dict)
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None

    def spec(self) -> dict:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "shape": list(self.shape),
                "params": self.params}


@dataclass
class LayerGraph:
    """A converted network: nodes in topological order (the first is the input), the output node's name,
    a gain per neuron node (Hz per unit of ANN activation; 1 until :func:`normalise`), and the QCFS levels
    L of a QCFS network (None: ReLU): the fewest of its layers', each neuron node holding its own in
    ``params["levels"]`` (a requantised pooling, ``models.vgg16(pool_levels=...)``, may have more)."""

    nodes: list
    output: str
    gains: dict = field(default_factory=dict)
    levels: int | None = None

    def __post_init__(self):
        self.gains = {n.name: float(self.gains.get(n.name, 1.0)) for n in self.neurons}

    @property
    def neurons(self) -> list:
        return [n for n in self.nodes if n.op == "neuron"]

    @property
    def linear(self) -> list:
        return [n for n in self.nodes if op_of(n).linear]

    @property
    def thresholds(self) -> list | None:
        """QCFS thresholds (lambda) per neuron node; None for a ReLU network."""
        return None if self.levels is None else [n.params["threshold"] for n in self.neurons]

    @property
    def image_shape(self) -> tuple:
        return tuple(self.nodes[0].shape)

    def spec(self) -> dict:
        return {"nodes": [n.spec() for n in self.nodes], "output": self.output}


def nodes_from_spec(spec: dict) -> list:
    """The weightless nodes of a :meth:`LayerGraph.spec`."""
    return [Node(n["name"], n["op"], list(n["inputs"]), tuple(n["shape"]), dict(n["params"])) for n in spec["nodes"]]


def vgg_graph_spec(channels, pool_after, num_classes: int, image_size: int) -> dict:
    """The graph of the SNN4Space VGG-16 pattern (3x3 'same' convs, ReLU, 2x2 average pooling, GAP, bias-free
    logits), as the VGG simulator before the layer graph described it (``channels``, ``pool_after``)."""
    nodes, size, previous = [{"name": "input", "op": "input", "inputs": [], "shape": [image_size, image_size, 3],
                              "params": {}}], image_size, "input"
    for i, (c, pool) in enumerate(zip(channels, pool_after)):
        nodes.append({"name": f"conv{i}", "op": "conv", "inputs": [previous], "shape": [size, size, c],
                      "params": {"kernel_size": [3, 3], "strides": [1, 1], "padding": "SAME", "bias": True}})
        nodes.append({"name": f"relu{i}", "op": "neuron", "inputs": [f"conv{i}"], "shape": [size, size, c],
                      "params": {"threshold": None}})
        previous = f"relu{i}"
        if pool:
            size //= 2
            nodes.append({"name": f"pool{i}", "op": "avg_pool", "inputs": [previous], "shape": [size, size, c],
                          "params": {"pool_size": [2, 2], "strides": [2, 2], "padding": "VALID"}})
            previous = f"pool{i}"
    nodes.append({"name": "gap", "op": "gap", "inputs": [previous], "shape": [channels[-1]], "params": {}})
    nodes.append({"name": "logits", "op": "dense", "inputs": ["gap"], "shape": [num_classes],
                  "params": {"bias": False}})
    return {"nodes": nodes, "output": "logits"}


# --------------------------------------------------------------------------
# Converters, one per Keras layer type
# --------------------------------------------------------------------------
CONVERTERS: dict = {}


def converts(*layer_types):
    """Class decorator: register a :class:`LayerConverter` for these Keras layer types (exact types)."""
    def register(cls):
        for layer_type in layer_types:
            CONVERTERS[layer_type] = cls
        return cls
    return register


class LayerConverter:
    """Turns one Keras layer into graph nodes.

    ``unsupported``: ``{attribute: allowed values}``; a layer whose attribute
    has another value is refused, naming the attribute.
    """

    unsupported: dict = {}

    def __init__(self, layer, builder: "_Builder"):
        self.layer = layer
        self.builder = builder

    def problem(self) -> str | None:
        """Why this layer cannot convert (None: it can)."""
        for attribute, allowed in self.unsupported.items():
            value = getattr(self.layer, attribute)
            value = getattr(value, "__name__", value)  # activations are functions
            value = value.item() if isinstance(value, np.ndarray) and value.size == 1 else value  # ReLU's settings
            if value not in allowed:
                shown = f"{value:g}" if isinstance(value, float) else repr(value)
                return f"{attribute}={shown} is not supported (supported: {', '.join(map(repr, allowed))})"
        return None

    def convert(self, inputs: list) -> str:
        """Add this layer's nodes over the nodes ``inputs``; returns the node that carries its output."""
        raise NotImplementedError

    def add(self, op: str, inputs: list, params: dict | None = None, name: str | None = None, **weights) -> str:
        """Add a node of the registered op ``op`` (:mod:`snn4vision.ops`) named after the layer."""
        if op not in OPS:  # the simulator, costs and exports would each fail later, and less clearly
            raise ValueError(f"{type(self).__name__} adds a {op!r} node, but no op of that name is registered "
                             f"(snn4vision.ops.registers)")
        shape = tuple(int(d) for d in self.layer.output.shape[1:])
        return self.builder.add(Node(name or self.layer.name, op, inputs, shape, params or {}, **weights))

    def add_activation(self, node: str) -> str:
        """A ReLU neuron after ``node`` when the layer has ``activation="relu"`` built in."""
        if getattr(self.layer.activation, "__name__", "linear") == "relu":
            return self.add("neuron", [node], {"threshold": None}, name=f"{self.layer.name}/relu")
        return node


_ACTIVATION = ("linear", "relu")


@converts(tf.keras.layers.Conv2D)
class ConvConverter(LayerConverter):
    unsupported = {"dilation_rate": [(1, 1)], "groups": [1], "data_format": ["channels_last"],
                   "activation": list(_ACTIVATION)}

    def convert(self, inputs):
        kernel, *bias = self.layer.get_weights()
        node = self.add("conv", inputs, {"strides": list(self.layer.strides), "padding": self.layer.padding.upper(),
                                         "kernel_size": list(self.layer.kernel_size), "bias": bool(bias)},
                        kernel=kernel, bias=bias[0] if bias else np.zeros(kernel.shape[-1], np.float32))
        return self.add_activation(node)


@converts(tf.keras.layers.DepthwiseConv2D)
class DepthwiseConverter(LayerConverter):
    unsupported = {"dilation_rate": [(1, 1)], "data_format": ["channels_last"], "activation": list(_ACTIVATION)}

    def convert(self, inputs):
        kernel, *bias = self.layer.get_weights()
        outputs = kernel.shape[2] * kernel.shape[3]
        node = self.add("depthwise", inputs,
                        {"strides": list(self.layer.strides), "padding": self.layer.padding.upper(),
                         "kernel_size": list(self.layer.kernel_size), "bias": bool(bias)},
                        kernel=kernel, bias=bias[0] if bias else np.zeros(outputs, np.float32))
        return self.add_activation(node)


@converts(tf.keras.layers.Dense)
class DenseConverter(LayerConverter):
    unsupported = {"activation": list(_ACTIVATION)}

    def problem(self):
        if len(self.layer.input.shape) != 2:
            return "a Dense layer on a feature map converts only after Flatten or GlobalAveragePooling2D"
        return super().problem()

    def convert(self, inputs):
        kernel, *bias = self.layer.get_weights()
        node = self.add("dense", inputs, {"bias": bool(bias)}, kernel=kernel,
                        bias=bias[0] if bias else np.zeros(kernel.shape[-1], np.float32))
        return self.add_activation(node)


@converts(tf.keras.layers.BatchNormalization)
class BatchNormConverter(LayerConverter):
    """Folded into the conv or dense layer it follows (exact in inference)."""

    def problem(self):
        axis = self.layer.axis
        if list(axis if isinstance(axis, (list, tuple)) else [axis]) not in ([-1], [len(self.layer.input.shape) - 1]):
            return "only BatchNorm over the channel axis folds"
        return None

    def convert(self, inputs):
        target = self.builder.nodes[inputs[0]]
        if not op_of(target).linear or self.builder.readers[inputs[0]] > 1:
            raise _NotConvertible("BatchNorm folds only into a conv or dense layer whose output nothing else reads: "
                                  "put it right after one")
        layer = self.layer
        mean, var = layer.moving_mean.numpy().astype(np.float64), layer.moving_variance.numpy().astype(np.float64)
        gamma = layer.gamma.numpy().astype(np.float64) if layer.gamma is not None else np.ones_like(mean)
        beta = layer.beta.numpy().astype(np.float64) if layer.beta is not None else np.zeros_like(mean)
        factor = gamma / np.sqrt(var + layer.epsilon)
        # a depthwise kernel is (h, w, C, M) for the C * M outputs c * M + m: the factors as (C, M)
        shape = target.kernel.shape[-2:] if target.op == "depthwise" else factor.shape
        target.kernel = (target.kernel * factor.reshape(shape)).astype(np.float32)
        target.bias = ((target.bias - mean) * factor + beta).astype(np.float32)
        target.params["bias"] = True
        return inputs[0]


@converts(tf.keras.layers.ReLU)
class ReLUConverter(LayerConverter):
    unsupported = {"max_value": [None], "negative_slope": [0.0], "threshold": [0.0]}

    def convert(self, inputs):
        return self.add("neuron", inputs, {"threshold": None})


@converts(tf.keras.layers.Activation)
class ActivationConverter(LayerConverter):
    unsupported = {"activation": list(_ACTIVATION)}

    def convert(self, inputs):
        if self.layer.activation.__name__ == "linear":
            return inputs[0]
        return self.add("neuron", inputs, {"threshold": None})


@converts(QCFS)
class QCFSConverter(LayerConverter):
    def problem(self):
        if self.builder.trained and float(self.layer.quantising.numpy()) != 1.0:
            return ("still in its ReLU warm-up (not quantising): convert a network whose training finished")
        return None

    def convert(self, inputs):
        return self.add("neuron", inputs, {"threshold": float(self.layer.threshold.numpy()),
                                           "levels": int(self.layer.levels)})


class _PoolConverter(LayerConverter):
    op = ""
    unsupported = {"data_format": ["channels_last"]}

    def convert(self, inputs):
        return self.add(self.op, inputs, {"pool_size": list(self.layer.pool_size), "strides": list(self.layer.strides),
                                          "padding": self.layer.padding.upper()})


@converts(tf.keras.layers.AveragePooling2D)
class AveragePoolingConverter(_PoolConverter):
    op = "avg_pool"


@converts(tf.keras.layers.MaxPooling2D)
class MaxPoolingConverter(_PoolConverter):
    """Rate-gated max pooling in the SNN (see the module's docstring)."""

    op = "max_pool"


@converts(tf.keras.layers.GlobalAveragePooling2D)
class GlobalAveragePoolingConverter(LayerConverter):
    unsupported = {"data_format": ["channels_last"], "keepdims": [False]}

    def convert(self, inputs):
        return self.add("gap", inputs)


@converts(tf.keras.layers.Add)
class AddConverter(LayerConverter):
    def convert(self, inputs):
        return self.add("add", inputs)


@converts(tf.keras.layers.Concatenate)
class ConcatenateConverter(LayerConverter):
    def problem(self):
        rank = len(self.layer.output.shape)
        return None if self.layer.axis in (-1, rank - 1) else "only concatenation along channels converts"

    def convert(self, inputs):
        return self.add("concat", inputs)


@converts(tf.keras.layers.Flatten, tf.keras.layers.Reshape)
class ReshapeConverter(LayerConverter):
    def problem(self):
        if isinstance(self.layer, tf.keras.layers.Flatten) and self.layer.data_format != "channels_last":
            return "only channels_last Flatten converts"
        return None

    def convert(self, inputs):
        return self.add("flatten", inputs)


@converts(tf.keras.layers.ZeroPadding2D)
class ZeroPaddingConverter(LayerConverter):
    unsupported = {"data_format": ["channels_last"]}

    def convert(self, inputs):
        return self.add("pad", inputs, {"padding": [list(p) for p in self.layer.padding]})


@converts(tf.keras.layers.Dropout, tf.keras.layers.SpatialDropout2D, tf.keras.layers.GaussianNoise,
          tf.keras.layers.GaussianDropout)
class InferenceIdentityConverter(LayerConverter):
    """Layers that only act in training: removed."""

    def convert(self, inputs):
        return inputs[0]


class _NotConvertible(Exception):
    """Raised by a converter that finds, while converting, that its layer cannot convert."""


class _Builder:
    """Collects nodes; ``readers[name]``: how many Keras layers read the node's output."""

    def __init__(self, trained: bool):
        self.nodes: dict = {}
        self.readers: dict = {}
        self.trained = trained

    def add(self, node: Node) -> str:
        if node.name in self.nodes:
            raise _NotConvertible(f"two nodes named {node.name}")
        self.nodes[node.name] = node
        return node.name


def _inbound_layers(model, layer) -> list:
    """The layers whose outputs ``layer`` reads in ``model`` (one call of the layer only)."""
    in_model = getattr(model, "_network_nodes", None)  # the calls of layers that belong to this model
    calls = [node for i, node in enumerate(layer._inbound_nodes)
             if in_model is None or f"{layer.name}_ib-{i}" in in_model]
    if len(calls) != 1:
        raise _NotConvertible("a layer called more than once (shared weights) does not convert")
    return [inbound.name for inbound in tf.nest.flatten(calls[0].inbound_layers)]


def build_graph(model, trained: bool = True) -> LayerGraph:
    """The :class:`LayerGraph` of a built single-input, single-output Keras model, BatchNorm folded.

    Raises one UserError naming every layer that does not convert and why. ``trained=False`` takes the
    structure of a model still in training (its QCFS layers may be in their ReLU warm-up).
    """
    graph, problems = _convert_layers(model, trained)
    if problems:
        raise UserError("cannot convert " + "; ".join(problems))
    return graph


def unconvertible_layers(model) -> list:
    """``["name: reason", ...]`` for every layer of ``model`` that cannot be converted (or the one rule the whole
    model breaks)."""
    try:
        return _convert_layers(model, trained=True)[1]
    except UserError as exc:
        return [str(exc)]


def _convert_layers(model, trained: bool) -> tuple:
    """``(graph, [])``, or ``(None, ["name: reason", ...])`` naming every layer that does not convert. A rule of
    the whole model (one input and output, some activation, no mixed activations) raises a UserError."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"model {model.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs: "
                        "only single-input, single-output models convert")
    input_layer = model.inputs[0]._keras_history.layer
    builder = _Builder(trained)
    builder.add(Node("input", "input", [], tuple(int(d) for d in model.inputs[0].shape[1:])))
    carried = {input_layer.name: "input"}  # Keras layer name -> node carrying its output
    inbound, problems, keras_readers = {}, [], {}
    for layer in model.layers:
        if layer is input_layer:
            continue
        try:
            inbound[layer.name] = _inbound_layers(model, layer)
        except _NotConvertible as exc:
            problems.append(f"{layer.name}: {exc}")
    for names in inbound.values():
        for name in names:
            keras_readers[name] = keras_readers.get(name, 0) + 1
    builder.readers["input"] = keras_readers.get(input_layer.name, 0)
    for layer in model.layers:
        if layer.name not in inbound:
            continue
        converter_type = CONVERTERS.get(type(layer))
        if converter_type is None:
            problems.append(f"{layer.name}: {type(layer).__name__} has no converter (replace it, or register a "
                            "LayerConverter for it with snn4vision.layer_graph.converts)")
            continue
        converter = converter_type(layer, builder)
        problem = converter.problem()
        if problem is None and all(name in carried for name in inbound[layer.name]):
            inputs = [carried[name] for name in inbound[layer.name]]
            try:
                node = carried[layer.name] = converter.convert(inputs)
            except _NotConvertible as exc:
                problem = str(exc)
            else:
                readers = keras_readers.get(layer.name, 0)
                # a removed or folded layer hands its readers to the node it passes on
                builder.readers[node] = builder.readers[node] - 1 + readers if node in inputs else readers
        if problem:
            problems.append(f"{layer.name}: {problem}")
    if problems:
        return None, problems
    nodes = list(builder.nodes.values())
    output = carried[model.outputs[0]._keras_history.layer.name]
    levels = {n.params.get("levels") for n in nodes if n.op == "neuron"}
    if not any(n.op == "neuron" for n in nodes):
        raise UserError(f"model {model.name} has no ReLU or QCFS activation: there is nothing to make spike")
    if None in levels and len(levels) > 1:
        raise UserError("mixed activations: every activation must be QCFS or every one ReLU")
    return LayerGraph(nodes, output, levels=None if None in levels else min(levels)), []


# --------------------------------------------------------------------------
# Gains: which factor each node's weights and inputs take
# --------------------------------------------------------------------------
@dataclass
class NodeScale:
    """How gains act on one node. Scales are names: ``ONE`` or a neuron node's name (its gain).

    ``inputs``: the scale of each input as produced; ``output``: the scale the node produces; a linear node's
    kernel is multiplied by ``output / inputs[0]`` and its bias by ``output``; any other node whose input
    scale differs from what it needs (a neuron: its own gain; an add or concat: its output) rescales that
    input by the ratio.
    """

    inputs: list
    output: str


def scale_plan(nodes: list, output: str) -> dict:
    """``{node name: NodeScale}``: where gains are applied, chosen so that no rescaling is needed in a chain
    (a VGG-16) and only the branches that meet at an add are rescaled otherwise."""
    consumers = {n.name: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            consumers[i].append(n)
    wanted = {}  # the scale a node's consumers would like it to produce (None: no preference)

    def wanted_input(node):
        if node.op == "neuron":
            return node.name
        return None if op_of(node).linear else wanted[node.name]

    for node in reversed(nodes):
        if node.name == output:
            wanted[node.name] = ONE
            continue
        asks = {wanted_input(c) for c in consumers[node.name]}
        wanted[node.name] = asks.pop() if len(asks) == 1 else None
    plan = {}
    for node in nodes:
        ins = [plan[i].output for i in node.inputs]
        if node.op == "input":
            out = ONE
        elif node.op == "neuron":
            out = node.name
        elif op_of(node).linear or op_of(node).meets:
            out = wanted[node.name] or ins[0]
        else:
            out = ins[0]
        plan[node.name] = NodeScale(ins, out)
    return plan


def rescale(x, have: str, need: str, gains: dict):
    """``x`` produced at scale ``have``, brought to scale ``need`` (no operation when they are the same)."""
    if have == need:
        return x
    if have == ONE:
        return x * gains[need]
    if need == ONE:
        return x / gains[have]
    return x * (gains[need] / gains[have])


def scaled_weights(scale: NodeScale, kernel, bias, gains: dict):
    """The kernel and bias of a linear node with gains applied: ``kernel * out / in``, ``bias * out``."""
    have, need = scale.inputs[0], scale.output
    if need == ONE:
        return (kernel if have == ONE else kernel / gains[have]), bias
    factor = gains[need] if have == ONE else gains[need] / gains[have]
    return kernel * factor, None if bias is None else bias * gains[need]


# --------------------------------------------------------------------------
# Running a graph
# --------------------------------------------------------------------------
def apply_op(node: Node, xs: list, kernel=None, bias=None):
    """Output of a non-neuron ``node`` for inputs ``xs`` (batched tensors); the kernel and bias of a linear node
    as given (gains already applied). The op's ``forward`` (:mod:`snn4vision.ops`)."""
    return op_of(node).forward(node, xs, kernel, bias)


def rate_forward(graph: LayerGraph, images, return_activations: bool = False):
    """Run the graph with rate neurons (ReLU, or QCFS for a QCFS network), gains applied: the ANN's logits.

    ``images``: ``(batch, h, w, c)``. Returns logits ``(batch, classes)`` and optionally
    ``{neuron node: output (at its gain)}``.
    """
    plan = scale_plan(graph.nodes, graph.output)
    gains = {name: np.float32(g) for name, g in graph.gains.items()}
    values, activations = {"input": tf.convert_to_tensor(images, tf.float32)}, {}
    for node in graph.nodes[1:]:
        scale = plan[node.name]
        xs = [values[i] for i in node.inputs]
        op = op_of(node)
        if node.op == "neuron":  # its input current is its producer's value at the neuron's own gain
            out = op.forward(node, [rescale(xs[0], scale.inputs[0], node.name, gains)])
            activations[node.name] = out
        elif op.linear:
            bias = node.bias if node.params["bias"] else None
            out = op.forward(node, xs, *scaled_weights(scale, node.kernel, bias, gains))
        else:
            if op.meets:
                xs = [rescale(x, have, scale.output, gains) for x, have in zip(xs, scale.inputs)]
            out = op.forward(node, xs)
        values[node.name] = out
    logits = rescale(values[graph.output], plan[graph.output].output, ONE, gains)
    return (logits, activations) if return_activations else logits


def activation_percentiles(graph: LayerGraph, batches, percentile: float = 99.9, max_values: int = 2_000_000,
                           seed: int = 0) -> list:
    """Per neuron node, the ``percentile`` of its ReLU outputs over ``batches`` of images (gains 1).

    Each node contributes at most ``max_values`` values (a seeded random subsample), which keeps memory bounded
    on large layers.
    """
    rng = np.random.default_rng(seed)
    collected = {n.name: [] for n in graph.neurons}
    for images in batches:
        _, activations = rate_forward(graph, images, return_activations=True)
        for name, act in activations.items():
            collected[name].append(act.numpy().ravel())
    result = []
    for store in collected.values():
        values = np.concatenate(store)
        if values.size > max_values:
            values = values[rng.choice(values.size, max_values, replace=False)]
        result.append(float(max(np.percentile(values, percentile), 1e-6)))
    return result


def normalise(graph: LayerGraph, percentiles: list, max_rate: float) -> LayerGraph:
    """Gains that map activation ``percentiles[l]`` of neuron node ``l`` to ``max_rate`` Hz: ``g_l = max_rate / p_l``.

    The logits are unchanged (see :func:`scale_plan`). ``percentiles`` must be measured with all gains 1.
    """
    if len(percentiles) != len(graph.neurons):
        raise ValueError("one percentile per neuron node is needed")
    gains = {n.name: float(max_rate / p) for n, p in zip(graph.neurons, percentiles)}
    return dataclasses.replace(graph, gains=gains)

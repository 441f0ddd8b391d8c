"""The converters that build a layer graph from a Keras model, one per Keras layer type (:func:`converts`,
:class:`LayerConverter`), and :func:`build_graph`."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..errors import UserError
from ..layers import QCFS
from ..ops import OPS, op_of
from .graph import LayerGraph, Node

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

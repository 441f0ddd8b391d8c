"""The operations of a layer graph, one class each: all the library knows about an op, in one place.

A :class:`~snn4vision.layer_graph.Node`'s ``op`` names a :class:`GraphOp` registered in :data:`OPS` (with
:func:`registers`). The op holds, for its nodes:

- ``forward``: its rate (ANN-equivalent) output, used by ``layer_graph.rate_forward`` and by the spiking
  simulator for every op that keeps no state over time;
- ``spiking_state`` / ``spiking_step``: its step in the spiking simulator where that differs (``stateful``);
- ``kernel_shape``: the kernel a linear op's node carries;
- ``synapses`` / ``adds``: its rows of ``costs.graph_costs``;
- ``nir_problem`` / ``to_nir``: what stops its NIR export, and its NIR nodes (``nir_io.to_nir``);
- ``keras_spiking``: its keras-spiking equivalent (``simulation.keras_spiking_model``).

Every op implements each capability of :data:`CAPABILITIES` or names it in ``unsupported`` with the reason,
which becomes the UserError of a request for it. Shapes are ``(batch, ...)`` with ``...`` a node's ``shape``
(channels last); a time-distributed keras-spiking tensor is ``(batch, time, ...)``.

Neuron nodes are the graph's state: their spiking step is the simulator's, with a neuron model of
:mod:`snn4vision.neurons`; here they hold their rate form, their NIR node and their keras-spiking layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import nir
import numpy as np
import tensorflow as tf

from .errors import UserError
from .layers import qcfs_formula
from .neurons import layer_seed

#: The registered ops by name (a node's ``op``).
OPS: dict = {}
#: What an op does for the library: each is a method of :class:`GraphOp` (``cost`` is ``synapses`` and
#: ``adds``, ``spiking`` is ``spiking_step`` for a ``stateful`` op); an op implements it or declares it in
#: ``unsupported``.
CAPABILITIES = ("forward", "spiking", "kernel_shape", "cost", "to_nir", "keras_spiking")


def registers(cls):
    """Class decorator: register an instance of a :class:`GraphOp` subclass under its ``name``."""
    OPS[cls.name] = cls()
    return cls


def op_of(node) -> "GraphOp":
    """The registered op of ``node``."""
    try:
        return OPS[node.op]
    except KeyError:
        raise ValueError(f"unknown operation {node.op!r}") from None


def _size(shape) -> int:
    return int(np.prod(shape))


@dataclass
class Term:
    """In a NIR export, one NIR node's output times ``factor``: a node of our graph is the sum of such terms."""

    source: str
    factor: float


def shared_factor(sources: list) -> float:
    """The factor folded into the NIR node that reads ``sources`` (the others get a Scale). 1 if a source has it
    (an add of a conv and an identity shortcut: the shortcut's spikes are scaled, the conv is left as is)."""
    factors = [t.factor for t in sources]
    return 1.0 if 1.0 in factors else factors[0]


class GraphOp:
    """One operation of a layer graph (a node's ``op``), registered with :func:`registers`.

    Flags, which the scale plan and the simulator read: ``linear``: a weighted sum with a kernel and a bias
    that absorbs gains; ``scale_free``: its output is its input's scale times a constant (gains pass through);
    ``meets``: it brings inputs of different scales to its output's (an add); ``stateful``: its spiking step
    keeps state over time (``spiking_state`` / ``spiking_step``), otherwise it is ``forward`` at every step.
    ``unsupported``: ``{capability: why}`` for each of :data:`CAPABILITIES` it has no form for.

    The ``to_nir`` methods take the export in progress (``nir_io``'s ``_Export``): ``model``, ``nodes`` and
    ``terms`` (``{our node: [Term, ...]}``) to fill in, ``weights`` (gains applied), ``gains``, ``thresholds``,
    ``plan``, ``reset``, and ``sources(node)``, ``input_of(node)``, ``feed(target, sources, factor)``,
    ``to_scale(have, need)``.
    """

    name = ""
    linear = False
    scale_free = False
    meets = False
    stateful = False
    unsupported: dict = {}

    def refuse(self, capability: str, node):
        """The UserError of a request for an ``unsupported`` capability (NotImplementedError: an op that forgot
        one)."""
        if capability in self.unsupported:
            return UserError(f"{node.name}: {self.unsupported[capability]}")
        return NotImplementedError(f"op {self.name} implements no {capability}")

    # rate ------------------------------------------------------------------
    def forward(self, node, xs: list, kernel=None, bias=None):
        """The node's output ``(batch, ...)`` for its inputs ``xs`` (at its scale); a linear op's kernel and bias
        with gains applied (bias None: none)."""
        raise self.refuse("forward", node)

    # spiking ---------------------------------------------------------------
    def spiking_state(self, node, input_shape):
        """A stateful op's state before the first step; ``input_shape``: its first input's ``(batch, ...)``."""
        raise self.refuse("spiking", node)

    def spiking_step(self, node, xs: list, state) -> tuple:
        """A stateful op's ``(output, state)`` at one step."""
        raise self.refuse("spiking", node)

    # weights ---------------------------------------------------------------
    def kernel_shape(self, node, input_shape) -> tuple:
        """The kernel of a linear node whose input is ``(batch, *input_shape)``."""
        raise self.refuse("kernel_shape", node)

    # costs -----------------------------------------------------------------
    def synapses(self, node, source) -> tuple:
        """``(connections, weights stored per output position, kernel positions)`` of a node that is a row of
        ``costs.graph_costs`` (every linear node; ``source``: its input node). The cost capability is this, or
        ``adds``, or both."""
        raise self.refuse("cost", node)

    def feeds_neurons_as_synapses(self) -> bool:
        """Whether a node of this op that reads spikes and feeds only neurons is a row of its own (each input a
        synapse), like a linear node."""
        return False

    def adds(self, node, input_shapes: list) -> int:
        """Additions of a node that is not a row (``input_shapes``: its inputs' shapes without the batch axis),
        charged to the first row after it."""
        raise self.refuse("cost", node)

    # NIR -------------------------------------------------------------------
    def nir_problem(self, node, model) -> str | None:
        """Why ``node`` of the SpikingNetwork ``model`` cannot be written as NIR (None: it can)."""
        return f"{node.name}: {self.unsupported['to_nir']}" if "to_nir" in self.unsupported else None

    def to_nir(self, node, export) -> None:
        """Add the node's NIR nodes and edges to ``export`` and set ``export.terms[node.name]``."""
        raise self.refuse("to_nir", node)

    # keras-spiking ---------------------------------------------------------
    def keras_spiking(self, node, model, xs: list, weights: dict):
        """The node's keras-spiking equivalent applied to ``xs`` (``(batch, time, ...)`` tensors) of the
        SpikingNetwork ``model`` (``weights``: its effective weights): the output tensor."""
        raise self.refuse("keras_spiking", node)

    @staticmethod
    def time_distributed(node, layer, x):
        """``layer`` applied at every step, named after the node (so that the naive model's layers are found by
        node name)."""
        wrapped = tf.keras.layers.TimeDistributed(layer, name=node.name.replace("/", "_"))
        return wrapped, wrapped(x)


@registers
class InputOp(GraphOp):
    """The image ``(batch, h, w, c)``: the first node of every graph, constant over time."""

    name = "input"
    unsupported = {c: "the input node is the image itself" for c in CAPABILITIES}

    def nir_problem(self, node, model):
        return None  # nir_io writes the graph's input node


@registers
class NeuronOp(GraphOp):
    """A layer of neurons, ``(batch, ...) -> (batch, ...)``: ReLU (``params["threshold"]`` None) or QCFS of
    ``threshold`` and ``levels`` in the rate form; in the SNN, a neuron model of :mod:`snn4vision.neurons` (the
    simulator's own state and step)."""

    name = "neuron"
    stateful = True  # its state, the membranes, is the simulator's
    unsupported = {"kernel_shape": "a neuron layer has no kernel",
                   "cost": "neurons are counted in the row that computes their input (costs.graph_costs)",
                   "spiking": "the simulator steps neuron nodes with its neuron model (snn4vision.neurons)"}

    def forward(self, node, xs, kernel=None, bias=None):
        threshold = node.params["threshold"]
        return tf.nn.relu(xs[0]) if threshold is None else qcfs_formula(xs[0], threshold, node.params["levels"])

    def to_nir(self, node, export):
        model, name = export.model, node.name
        sources = export.sources(node)
        # our input current is the producer's value brought to this neuron's gain
        factor = shared_factor(sources) * export.to_scale(export.plan[name].inputs[0], name)
        threshold = export.thresholds[name] / factor
        shape = (node.shape[2], node.shape[0], node.shape[1]) if len(node.shape) == 3 else tuple(node.shape)
        meta = {"reset": export.reset, "v_initial": float(threshold / 2)}
        if model.neuron == "lif" and model.leak < 1.0:  # a LIF neuron that does not leak is an IF neuron
            tau = -model.dt / math.log(model.leak)
            meta["leak_per_step"] = model.leak
            export.nodes[name] = nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / model.dt),
                                         v_leak=np.zeros(shape), v_threshold=np.full(shape, threshold),
                                         metadata=meta)
        else:
            export.nodes[name] = nir.IF(r=np.ones(shape), v_threshold=np.full(shape, threshold), metadata=meta)
        export.feed(name, sources, shared_factor(sources))
        export.terms[name] = [Term(name, float(export.thresholds[name]))]

    def keras_spiking(self, node, model, xs, weights):
        """``SpikingActivation("relu")`` seeded like the simulator's layer, then ``Lowpass`` when ``model.tau``
        is set (its time constants the model's)."""
        import keras_spiking  # only the naive reference model needs it

        index = [n.name for n in model.neuron_nodes].index(node.name)
        x = keras_spiking.SpikingActivation("relu", dt=model.dt, seed=layer_seed(model.seed, index),
                                            name=f"spiking_{index}")(xs[0])
        if model.tau is not None:
            lowpass = keras_spiking.Lowpass(model.tau, dt=model.dt, name=f"lowpass_{index}")
            x = lowpass(x)
            [w for w in lowpass.weights if "tau" in w.name][0].assign(model.taus[index])
        return x


class _LinearOp(GraphOp):
    """A weighted sum with a kernel and a bias (``params["bias"]``: whether it has one)."""

    linear = True

    def forward(self, node, xs, kernel=None, bias=None):
        y = self.weighted_sum(node, xs[0], kernel)
        return y if bias is None else y + bias

    def weighted_sum(self, node, x, kernel):
        raise NotImplementedError

    def keras_spiking(self, node, model, xs, weights):
        wrapped, x = self.time_distributed(node, self.keras_layer(node, model), xs[0])
        kernel, bias = weights[node.name]
        wrapped.set_weights([kernel.numpy()] + ([] if bias is None else [bias.numpy()]))
        return x

    def keras_layer(self, node, model):
        raise NotImplementedError


def _same_padding(size: int, kernel: int, stride: int) -> tuple:
    """Keras/TensorFlow 'same' padding of one axis: (before, after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _strides(node) -> tuple:
    return tuple(int(s) for s in node.params["strides"])


class _ConvOp(_LinearOp):
    """A 2-D convolution ``(batch, h, w, c) -> (batch, h', w', c')`` (``kernel_size``, ``strides``,
    ``padding``: 'SAME' or 'VALID')."""

    def nir_weight(self, kernel: np.ndarray) -> np.ndarray:
        """NIR's ``(out, in, kh, kw)`` weight of our kernel."""
        raise NotImplementedError

    def nir_weights(self, node, size, kernel) -> tuple:
        """NIR's ``(weight (out, in, kh, kw), padding (ph, pw))`` of the node on an input map of ``size``.

        Keras's 'same' padding with stride 2 pads one more row at the end than at the start, which NIR's
        symmetric padding cannot state: a leading zero row (column) and one more padding read the same pixels."""
        weight = self.nir_weight(np.asarray(kernel, np.float32))
        padding = [0, 0]
        if node.params["padding"] == "SAME":
            for axis in range(2):
                before, after = _same_padding(size[axis], weight.shape[2 + axis], node.params["strides"][axis])
                if after == before + 1:  # one more at the end: shift the window by a leading zero row/column
                    shape = list(weight.shape)
                    shape[2 + axis] = 1
                    weight = np.concatenate([np.zeros(shape, weight.dtype), weight], axis=2 + axis)
                    before = after
                padding[axis] = before
        return weight, tuple(padding)

    def to_nir(self, node, export):
        name = node.name
        kernel, bias = export.weights[name]
        sources = export.sources(node)
        factor = shared_factor(sources)
        source = export.input_of(node)
        weight, padding = self.nir_weights(node, source.shape, kernel)
        if source.op == "pad":  # nir_problems() checked that it is even, before a 'valid' conv
            padding = tuple(int(pad[0]) for pad in source.params["padding"])
            source = export.input_of(source)
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias
        export.nodes[name] = nir.Conv2d(input_shape=tuple(int(s) for s in source.shape[:2]),
                                        weight=weight * np.float32(factor), stride=_strides(node),
                                        padding=padding, dilation=1, groups=1, bias=bias)
        export.feed(name, sources, factor)
        export.terms[name] = [Term(name, 1.0)]

    def synapses(self, node, source):
        k = node.params.get("kernel_size", [1, 1])
        connections = self.connections(node, source, k)
        return connections, connections // _size(node.shape[:-1]), k[0] * k[1]


@registers
class ConvOp(_ConvOp):
    """A full convolution: kernel ``(kh, kw, c, c')``."""

    name = "conv"

    def weighted_sum(self, node, x, kernel):
        return tf.nn.conv2d(x, kernel, node.params["strides"], node.params["padding"])

    def kernel_shape(self, node, input_shape):
        return (*node.params["kernel_size"], input_shape[-1], node.shape[-1])

    def connections(self, node, source, k):
        connections = _size(node.shape) * k[0] * k[1] * source.shape[-1]
        return connections

    def nir_weight(self, kernel):
        return kernel.transpose(3, 2, 0, 1)

    def keras_layer(self, node, model):
        p = node.params
        return tf.keras.layers.Conv2D(node.shape[-1], p["kernel_size"], p["strides"], p["padding"].lower(),
                                      use_bias=node.name in model.biases)


@registers
class DepthwiseOp(_ConvOp):
    """A depthwise convolution: kernel ``(kh, kw, c, m)``, output channel ``i * m + j`` reads input channel
    ``i`` alone (``c' = c * m``)."""

    name = "depthwise"

    def weighted_sum(self, node, x, kernel):
        return tf.nn.depthwise_conv2d(x, kernel, [1, *node.params["strides"], 1], node.params["padding"])

    def kernel_shape(self, node, input_shape):
        return (*node.params["kernel_size"], input_shape[-1], node.shape[-1] // input_shape[-1])

    def connections(self, node, source, k):
        connections = _size(node.shape) * k[0] * k[1]
        return connections

    def nir_weight(self, kernel):
        return _depthwise_as_dense(kernel)

    def keras_layer(self, node, model):
        p = node.params
        return tf.keras.layers.DepthwiseConv2D(p["kernel_size"], p["strides"], p["padding"].lower(),
                                               depth_multiplier=model.kernels[node.name].shape[-1],
                                               use_bias=node.name in model.biases)


def _depthwise_as_dense(kernel: np.ndarray) -> np.ndarray:
    """A depthwise kernel ``(kh, kw, in, multiplier)`` as the dense ``(in * multiplier, in, kh, kw)`` kernel of the
    same conv: output channel ``c * multiplier + m`` reads input channel ``c`` alone, every other weight is 0.

    Not NIR's ``groups = in``: nir's Conv2d takes its input channels from ``weight.shape[1]`` whatever the
    groups, so nir 1.0.7 and later, which type-check on read, refuse a grouped conv in ``nir.read`` (and sinabs's
    importer builds it with the wrong input channels). The dense kernel is exact everywhere, at ``in`` times the
    weights in the file."""
    kh, kw, cin, mult = kernel.shape
    dense = np.zeros((cin * mult, cin, kh, kw), np.float32)
    per_output = kernel.reshape(kh, kw, cin * mult).transpose(2, 0, 1)  # (in * multiplier, kh, kw)
    dense[np.arange(cin * mult), np.arange(cin * mult) // mult] = per_output
    return dense


@registers
class DenseOp(_LinearOp):
    """A fully connected layer ``(batch, n) -> (batch, n')``, kernel ``(n, n')``."""

    name = "dense"

    def weighted_sum(self, node, x, kernel):
        return x @ kernel

    def kernel_shape(self, node, input_shape):
        return (input_shape[-1], node.shape[-1])

    def synapses(self, node, source):
        connections = _size(node.shape) * source.shape[-1]
        return connections, connections // _size(node.shape[:-1]), 1

    def to_nir(self, node, export):
        name = node.name
        kernel, bias = export.weights[name]
        sources = export.sources(node)
        factor = shared_factor(sources)
        source = export.input_of(node)
        if source.op == "flatten" and len(export.input_of(source).shape) == 3:  # ours (h, w, c), NIR (c, h, w)
            h, w, c = export.input_of(source).shape
            kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
        bias = np.zeros(kernel.shape[1], np.float32) if bias is None else bias
        export.nodes[name] = nir.Affine(weight=(kernel * factor).T.copy(), bias=bias)
        export.feed(name, sources, factor)
        export.terms[name] = [Term(name, 1.0)]

    def keras_layer(self, node, model):
        return tf.keras.layers.Dense(node.shape[-1], use_bias=node.name in model.biases)


class _PoolOp(GraphOp):
    """A pooling ``(batch, h, w, c) -> (batch, h', w', c)`` (``pool_size``, ``strides``, ``padding``)."""

    scale_free = True
    unsupported = {"kernel_shape": "a pooling has no kernel"}

    def adds(self, node, input_shapes):
        return _size(input_shapes[0])


@registers
class AveragePoolOp(_PoolOp):
    """Average pooling; a pooling of spikes that feeds only neurons (a requantised pooled map) is a cost row of
    its own, each input one synapse. In NIR, a ``SumPool2d`` with its ``1 / window`` folded into what reads it."""

    name = "avg_pool"

    def forward(self, node, xs, kernel=None, bias=None):
        p = node.params
        return tf.nn.avg_pool2d(xs[0], p["pool_size"], p["strides"], p["padding"])

    def feeds_neurons_as_synapses(self):
        return True

    def synapses(self, node, source):
        window = node.params.get("pool_size", [2, 2])
        return _size(node.shape) * window[0] * window[1], 0, window[0] * window[1]

    def nir_problem(self, node, model):
        if _pool_padding(node, _input(model, node).shape) != (0, 0):
            return (f"{node.name}: average pooling with 'same' padding divides border windows by fewer pixels, "
                    f"which NIR's SumPool2d cannot: use padding='valid'")
        return None

    def to_nir(self, node, export):
        _sum_pool(node, export, tuple(int(k) for k in node.params["pool_size"]), _strides(node), flatten=False)

    def keras_spiking(self, node, model, xs, weights):
        p = node.params
        layer = tf.keras.layers.AveragePooling2D(p["pool_size"], p["strides"], p["padding"].lower())
        return self.time_distributed(node, layer, xs[0])[1]


def _input(model, node):
    return next(n for n in model.nodes if n.name == node.inputs[0])


def _pool_padding(node, size) -> tuple:
    if node.params["padding"] == "VALID":
        return (0, 0)
    return tuple(sum(_same_padding(size[a], node.params["pool_size"][a], node.params["strides"][a]))
                 for a in range(2))


def _sum_pool(node, export, window, stride, flatten: bool) -> None:
    """A NIR ``SumPool2d`` (and a ``Flatten`` after it), its ``1 / window`` left to the nodes that read it."""
    name = node.name
    source = export.input_of(node)
    sources = export.sources(node)
    export.nodes[name] = nir.SumPool2d(kernel_size=np.asarray(window), stride=np.asarray(stride),
                                       padding=np.asarray([0, 0]))
    factor = shared_factor(sources)
    export.feed(name, sources, factor)
    out = name
    if flatten:
        out = f"{name}_flatten"
        export.nodes[out] = nir.Flatten(input_type={"input": np.asarray([source.shape[2], 1, 1])},
                                        start_dim=0, end_dim=-1)
        export.edges.append((name, out))
    export.terms[name] = [Term(out, factor / (window[0] * window[1]))]


@registers
class MaxPoolOp(_PoolOp):
    """Max pooling; in the SNN rate-gated: in each window the unit with the most output so far passes its current
    output (the approach of snntoolbox), which equals max pooling of the rates once they have settled."""

    name = "max_pool"
    stateful = True
    unsupported = {**_PoolOp.unsupported,
                   "to_nir": "NIR has no max pooling of spikes: use AveragePooling2D in the ANN",
                   "keras_spiking": "keras-spiking has no equivalent of max pooling of spikes"}

    def forward(self, node, xs, kernel=None, bias=None):
        p = node.params
        return tf.nn.max_pool2d(xs[0], p["pool_size"], p["strides"], p["padding"])

    def spiking_state(self, node, input_shape):
        return tf.zeros(input_shape)  # the output of each input unit so far

    def spiking_step(self, node, xs, state):
        gate = state + xs[0]
        p = node.params
        _, where = tf.nn.max_pool_with_argmax(gate, p["pool_size"], p["strides"], p["padding"],
                                              include_batch_in_index=True)
        return tf.gather(tf.reshape(xs[0], [-1]), where), gate


@registers
class GlobalAveragePoolOp(_PoolOp):
    """Global average pooling ``(batch, h, w, c) -> (batch, c)``; in NIR a ``SumPool2d`` over the whole map and a
    ``Flatten``."""

    name = "gap"

    def forward(self, node, xs, kernel=None, bias=None):
        return tf.reduce_mean(xs[0], axis=[1, 2])

    def to_nir(self, node, export):
        h, w = export.input_of(node).shape[:2]
        _sum_pool(node, export, (h, w), (h, w), flatten=True)

    def keras_spiking(self, node, model, xs, weights):
        return self.time_distributed(node, tf.keras.layers.GlobalAveragePooling2D(), xs[0])[1]


class _ShapeOp(GraphOp):
    """An op that moves values without arithmetic: no kernel, no cost."""

    scale_free = True
    unsupported = {"kernel_shape": "it has no kernel"}

    def adds(self, node, input_shapes):
        return 0


@registers
class FlattenOp(_ShapeOp):
    """A reshape ``(batch, ...) -> (batch, *shape)`` (Flatten, Reshape); NIR exports only flattening to a
    vector."""

    name = "flatten"

    def forward(self, node, xs, kernel=None, bias=None):
        return tf.reshape(xs[0], [-1, *node.shape])

    def nir_problem(self, node, model):
        if len(node.shape) != 1:
            return f"{node.name}: a Reshape to {tuple(node.shape)}: NIR exports only flattening to a vector"
        return None

    def to_nir(self, node, export):
        name = node.name
        sources = export.sources(node)
        shape = export.input_of(node).shape
        channels_first = (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)
        export.nodes[name] = nir.Flatten(input_type={"input": np.asarray(channels_first)}, start_dim=0, end_dim=-1)
        export.feed(name, sources, shared_factor(sources))
        export.terms[name] = [Term(name, shared_factor(sources))]

    def keras_spiking(self, node, model, xs, weights):
        return self.time_distributed(node, tf.keras.layers.Reshape(node.shape), xs[0])[1]


@registers
class ZeroPaddingOp(_ShapeOp):
    """Zero padding ``(batch, h, w, c) -> (batch, h + top + bottom, w + left + right, c)`` (``padding``:
    ``[[top, bottom], [left, right]]``); in NIR, the padding of the conv that reads it."""

    name = "pad"

    def forward(self, node, xs, kernel=None, bias=None):
        return tf.pad(xs[0], [[0, 0], node.params["padding"][0], node.params["padding"][1], [0, 0]])

    def nir_problem(self, node, model):
        readers = [n for n in model.nodes if node.name in n.inputs]
        if any(a != b for a, b in node.params["padding"]) or any(
                n.op not in ("conv", "depthwise") or n.params["padding"] != "VALID" for n in readers):
            return (f"{node.name}: NIR pads only inside a conv, evenly: put ZeroPadding2D with equal padding on "
                    f"both sides only before convs with padding='valid'")
        return None

    def to_nir(self, node, export):
        export.terms[node.name] = export.sources(node)  # folded into the conv that reads it

    def keras_spiking(self, node, model, xs, weights):
        layer = tf.keras.layers.ZeroPadding2D([tuple(pad) for pad in node.params["padding"]])
        return self.time_distributed(node, layer, xs[0])[1]


@registers
class AddOp(_ShapeOp):
    """A residual add of same-shaped inputs ``(batch, ...)``, each first brought to the add's scale; in NIR,
    several edges into the nodes that read it (NIR sums them)."""

    name = "add"
    meets = True

    def forward(self, node, xs, kernel=None, bias=None):
        return tf.add_n(xs)

    def adds(self, node, input_shapes):
        return _size(node.shape) * (len(node.inputs) - 1)

    def to_nir(self, node, export):
        scale = export.plan[node.name]
        export.terms[node.name] = [Term(t.source, t.factor * export.to_scale(have, scale.output))
                                   for i, have in zip(node.inputs, scale.inputs) for t in export.terms[i]]

    def keras_spiking(self, node, model, xs, weights):
        return tf.keras.layers.Add()(xs)


@registers
class ConcatenateOp(_ShapeOp):
    """Concatenation along channels of ``(batch, ..., c_i)`` inputs, each first brought to its scale."""

    name = "concat"
    meets = True
    unsupported = {**_ShapeOp.unsupported,
                   "to_nir": "NIR has no concatenation: build the network without Concatenate"}

    def forward(self, node, xs, kernel=None, bias=None):
        return tf.concat(xs, axis=-1)

    def keras_spiking(self, node, model, xs, weights):
        return tf.keras.layers.Concatenate()(xs)


#: Ops that compute a weighted sum (they take a kernel and a bias, and absorb gains), as registered at import.
LINEAR_OPS = tuple(name for name, op in OPS.items() if op.linear)
#: Ops whose output is their input's scale times a constant (gains pass through them), as registered at import.
SCALE_FREE_OPS = tuple(name for name, op in OPS.items() if op.scale_free)

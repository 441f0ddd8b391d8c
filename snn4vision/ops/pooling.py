"""Pooling: :class:`AveragePoolOp`, :class:`MaxPoolOp`, :class:`GlobalAveragePoolOp`."""
from __future__ import annotations

import nir
import numpy as np
import tensorflow as tf

from .base import GraphOp, Term, _size, registers, shared_factor
from .linear import _same_padding, _strides

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

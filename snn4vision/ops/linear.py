"""Weighted sums, which carry a kernel and a bias and absorb gains: :class:`ConvOp`, :class:`DepthwiseOp`,
:class:`DenseOp`."""
from __future__ import annotations

import math

import nir
import numpy as np
import tensorflow as tf

from .base import GraphOp, Term, _size, registers, shared_factor

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

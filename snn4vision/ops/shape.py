"""Ops that move or join values without weights: :class:`FlattenOp`, :class:`ZeroPaddingOp`, :class:`AddOp`,
:class:`ConcatenateOp`."""
from __future__ import annotations

import nir
import numpy as np
import tensorflow as tf

from .base import GraphOp, Term, _size, registers, shared_factor

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

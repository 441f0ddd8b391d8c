"""The operations of a layer graph, one class each: all the library knows about an op, in one place; a family of
ops a module (:mod:`~snn4vision.ops.base`: :class:`GraphOp` and the registry;
:mod:`~snn4vision.ops.input_and_neurons`, :mod:`~snn4vision.ops.linear`, :mod:`~snn4vision.ops.pooling`,
:mod:`~snn4vision.ops.shape`), every name re-exported here. A new op is one class in one file, registered
with :func:`registers`.

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
from .base import CAPABILITIES, OPS, GraphOp, Term, op_of, registers, shared_factor
from .input_and_neurons import InputOp, NeuronOp
from .linear import ConvOp, DenseOp, DepthwiseOp
from .pooling import AveragePoolOp, GlobalAveragePoolOp, MaxPoolOp
from .shape import AddOp, ConcatenateOp, FlattenOp, ZeroPaddingOp

#: Ops that compute a weighted sum (they take a kernel and a bias, and absorb gains), as registered at import.
LINEAR_OPS = tuple(name for name, op in OPS.items() if op.linear)
#: Ops whose output is their input's scale times a constant (gains pass through them), as registered at import.
SCALE_FREE_OPS = tuple(name for name, op in OPS.items() if op.scale_free)

__all__ = [
    "CAPABILITIES", "LINEAR_OPS", "OPS", "SCALE_FREE_OPS", "AddOp", "AveragePoolOp", "ConcatenateOp", "ConvOp",
    "DenseOp", "DepthwiseOp", "FlattenOp", "GlobalAveragePoolOp", "GraphOp", "InputOp", "MaxPoolOp", "NeuronOp",
    "Term", "ZeroPaddingOp", "op_of", "registers", "shared_factor",
]

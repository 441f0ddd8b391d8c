"""What every graph op is (:class:`GraphOp`), the registry (:data:`OPS`, :func:`registers`, :func:`op_of`) and
the NIR export's :class:`Term`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..errors import UserError

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

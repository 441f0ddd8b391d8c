"""The graph's input and its neurons (the graph's state): :class:`InputOp`, :class:`NeuronOp`."""
from __future__ import annotations

import math

import nir
import numpy as np
import tensorflow as tf

from ..layers import qcfs_formula
from ..neurons import layer_seed
from .base import CAPABILITIES, GraphOp, Term, registers, shared_factor

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

"""The spiking simulator of converted networks, :class:`SpikingNetwork` (its loop over time: :mod:`.stepping`).

:class:`SpikingNetwork` runs a :class:`~snn4vision.layer_graph.LayerGraph`
step by step with the neurons of :mod:`snn4vision.neurons`. Neuron and
synapse arithmetic follow keras-spiking 0.3 exactly for ``neuron=
"keras_spiking"``: initial voltages ``stateless_uniform([batch, ...],
seed=(s, s))``, then the low-pass synapse ``y <- (1 - a) * spikes + a * y``
with ``a = exp(-dt / tau)`` and ``y`` starting at zero. In training, spikes
pass the gradient of the neuron's rate (spiking-aware training, as
keras-spiking does).

For ANNs trained with QCFS (``snn4vision.layers.QCFS``) the neurons are
integrate-and-fire (``"if"``, ``"signed_if"``, ``"lif"``) with the QCFS
thresholds and no synaptic filter.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from .. import neurons as neuron_models
from .. import nir_io
from ..costs import graph_costs, network_activity, sop_weights
from ..errors import UserError
from ..evaluation import evaluate_images
from ..layer_graph import LayerGraph, nodes_from_spec, scale_plan, scaled_weights, vgg_graph_spec
from ..ops import op_of
from .stepping import Run, outside_band, readout

#: Neuron models by name (snn4vision.neurons).
NEURONS = tuple(neuron_models.NEURONS)
#: The integrate-and-fire neurons of QCFS networks.
IF_NEURONS = tuple(name for name, cls in neuron_models.NEURONS.items() if cls.thresholded)


@tf.keras.utils.register_keras_serializable(package="snn4vision")
class SpikingNetwork(tf.keras.Model):
    """A converted network as a spiking network, simulated step-major over its layer graph.

    ``graph``: the graph's :meth:`~snn4vision.layer_graph.LayerGraph.spec` (weights are variables of this
    model). Input: images ``(batch, h, w, c)`` (constant over time). ``call`` returns the read-out logits
    ``(batch, classes)``: the mean of the last ``readout_steps`` per-step logits (``None``: all steps).
    :meth:`simulate` returns per-step logits ``(batch, time, classes)`` and spike counts
    ``(batch, time, neuron layers)``.

    The nodes that see only the analog image (the first conv, say) do not change over time and run once.
    One loop over time runs every other node and keeps state only for neurons, synapses and rate-gated max
    pools. The final dense layer (the logits) is applied to all steps at once after the loop. The simulation
    is causal: the first T steps of a longer run are a run of T steps.

    ``neuron``: a name of :data:`NEURONS`; ``max_spikes``: spikes per step (signed IF bursts); ``leak``: the
    LIF neuron's decay per step. ``tau``: synaptic time constant in seconds, per neuron and trainable
    (``None``: no synapse); ``train_tau`` / ``train_dt`` make the time constants / the step length trainable
    (dt gets its gradient through the synaptic filters, as in keras-spiking). ``rate_band``: ``(low, high)``
    Hz; in training, adds ``rate_weight * sum_l ((max(low - r_l, 0) + max(r_l - high, 0)) / high)^2`` where
    ``r_l`` is neuron layer ``l``'s mean filtered rate. ``sparsity``: in training, adds ``sparsity`` x the
    measured synaptic operations per ANN MAC, each layer's spikes per neuron (straight-through) weighted by
    the synaptic operations one spike causes (:func:`costs.sop_weights`). ``rate_l2``: in training,
    keras-spiking's ranged L2 activity regulariser as SNN4Space puts it on every spiking activation:
    ``rate_l2`` x the sum over steps and neurons of the squared distance of each neuron's output (``n / dt``
    Hz) from the ``rate_band``, per image (keras-spiking neurons only).
    """

    def __init__(self, graph, timesteps=8, dt=0.001, tau=0.1, seed=0, readout_steps=None, rate_band=None,
                 rate_weight=0.0, train_tau=True, train_dt=False, neuron="keras_spiking", max_spikes=1,
                 sparsity=0.0, rate_l2=0.0, leak=0.9, **kwargs):
        super().__init__(**kwargs)
        settings = {"max_spikes": int(max_spikes)} | ({"leak": float(leak)} if neuron == "lif" else {})
        self.cell = neuron_models.neuron(neuron, **settings)
        if self.cell.thresholded and tau is not None:
            raise ValueError("integrate-and-fire (QCFS) neurons take no synaptic filter: use tau=None")
        if rate_l2 and (neuron != "keras_spiking" or not rate_band):
            raise ValueError("rate_l2 regularises keras-spiking neurons' rates towards a rate_band: give both")
        self.graph = {"nodes": [dict(n) for n in graph["nodes"]], "output": graph["output"]}
        self.neuron = neuron
        self.max_spikes = int(max_spikes)
        self.leak = float(leak)
        self.timesteps = int(timesteps)
        self.dt = float(dt)
        self.tau = None if tau is None else float(tau)
        self.seed = int(seed)
        self.readout_steps = None if readout_steps is None else int(readout_steps)
        self.rate_band = None if rate_band is None else tuple(float(r) for r in rate_band)
        self.rate_weight = float(rate_weight)
        self.sparsity = float(sparsity)
        self.rate_l2 = float(rate_l2)
        self.train_tau = bool(train_tau)
        self.train_dt = bool(train_dt)
        self.nodes = nodes_from_spec(self.graph)
        self.plan = scale_plan(self.nodes, self.graph["output"])
        self.neuron_nodes = [n for n in self.nodes if n.op == "neuron"]
        self.static = set()  # nodes computed once: they depend on the image only
        for node in self.nodes:
            if node.op == "input" or (node.op != "neuron" and all(i in self.static for i in node.inputs)):
                self.static.add(node.name)
        output = next(n for n in self.nodes if n.name == self.graph["output"])
        # the logits layer runs on all steps at once, after the loop
        self.tail = output if output.op == "dense" and output.name not in self.static else None
        self.kernels, self.biases, self.taus = {}, {}, []
        linear = [n for n in self.nodes if op_of(n).linear]
        for i, node in enumerate(linear):
            # names as the VGG simulator had them, so that its runs' weights still load
            prefix = "logits_" if node is self.tail else ""
            suffix = "" if node is self.tail else f"_{i}"
            shape = self._kernel_shape(node)
            self.kernels[node.name] = self.add_weight(name=f"{prefix}kernel{suffix}", shape=shape)
            if node.params.get("bias", True):
                self.biases[node.name] = self.add_weight(name=f"{prefix}bias{suffix}", shape=(node.shape[-1],),
                                                         initializer="zeros")
        for i, node in enumerate(self.neuron_nodes):
            if self.tau is not None:
                self.taus.append(self.add_weight(
                    name=f"tau_{i}", shape=(1, *node.shape), initializer=tf.keras.initializers.Constant(self.tau),
                    trainable=self.train_tau, constraint=tf.keras.constraints.NonNeg()))
        # The step length as a weight, so that it can be trained (with train_dt); float32 like keras-spiking's.
        self.dt_weight = self.add_weight(name="dt", shape=(), initializer=tf.keras.initializers.Constant(self.dt),
                                         trainable=self.train_dt, constraint=tf.keras.constraints.NonNeg())
        # Hz per unit of ANN activation, per neuron layer (rate normalisation); not trained.
        self.gains = self.add_weight(name="gains", shape=(len(self.neuron_nodes),), initializer="ones",
                                     trainable=False)
        # Integrate-and-fire thresholds (QCFS lambda) per neuron layer.
        self.thresholds = self.add_weight(name="thresholds", shape=(len(self.neuron_nodes),), initializer="ones",
                                          trainable=False)

    def _kernel_shape(self, node) -> tuple:
        return op_of(node).kernel_shape(node, self._input_of(node).shape)

    @classmethod
    def from_graph(cls, graph: LayerGraph, **kwargs) -> "SpikingNetwork":
        model = cls(graph.spec(), **kwargs)
        model.set_graph(graph)
        return model

    @classmethod
    def from_config(cls, config):
        if "channels" in config:  # written by the VGG simulator before the layer graph
            config = dict(config)
            config["graph"] = vgg_graph_spec(config.pop("channels"), config.pop("pool_after"),
                                             config.pop("num_classes"), config.pop("image_size"))
        return cls(**config)

    def set_graph(self, graph: LayerGraph) -> None:
        """Take the weights, gains and thresholds of ``graph`` (the graph this model was built from)."""
        for node in graph.linear:
            self.kernels[node.name].assign(node.kernel)
            if node.name in self.biases:
                self.biases[node.name].assign(node.bias)
        self.gains.assign(np.asarray([graph.gains[n.name] for n in graph.neurons], np.float32))
        if graph.thresholds:
            self.thresholds.assign(np.asarray(graph.thresholds, np.float32))

    def _gains(self) -> dict:
        """``{neuron node: its gain}`` (tensors)."""
        return dict(zip([n.name for n in self.neuron_nodes], tf.unstack(self.gains)))

    def effective_weights(self) -> dict:
        """``{linear node: (kernel, bias)}`` with the gains applied (what the neurons see); bias may be None."""
        gains = self._gains()
        return {name: scaled_weights(self.plan[name], kernel, self.biases.get(name), gains)
                for name, kernel in self.kernels.items()}

    @property
    def image_size(self) -> int:
        return int(self.nodes[0].shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.nodes[-1].shape[-1]) if self.tail is None else int(self.tail.shape[-1])

    def get_config(self):
        return {"graph": self.graph, "timesteps": self.timesteps, "dt": self.dt, "tau": self.tau,
                "seed": self.seed, "readout_steps": self.readout_steps, "rate_band": self.rate_band,
                "rate_weight": self.rate_weight, "sparsity": self.sparsity, "rate_l2": self.rate_l2,
                "train_tau": self.train_tau, "train_dt": self.train_dt, "neuron": self.neuron,
                "max_spikes": self.max_spikes, "leak": self.leak, "name": self.name}

    # ------------------------------------------------------------------
    def simulate(self, images, timesteps=None, training=False, return_outputs=False):
        """Run ``timesteps`` steps on ``images`` ``(B, ...)``, the same input at every step, or on frames
        ``(B, T, ...)``, frame t at step t (T = ``timesteps``); returns ``{"logits": (B,T,C), "spikes":
        (B,T,L), "activity": (B,T,L)}`` over the ``L`` neuron layers in graph order, and in training ``"rates": (B,T,L)``.

        ``spikes`` counts spikes (of either sign) per image, step and layer, ``events`` the neurons that fired (a
        burst counts once); ``activity`` is each layer's spikes
        per neuron and step, differentiable in training (straight-through); ``rates`` is each layer's mean
        filtered output (Hz) per step (only the rate-band penalty needs it, so inference skips it). With
        ``return_outputs``, ``"outputs"`` maps each neuron node to its
        output averaged over time, in the ANN's units (``(B, ...)``), for comparison with the ANN.
        """
        return Run(self, images, self.timesteps if timesteps is None else timesteps, training,
                   return_outputs).run()

    @property
    def levels(self) -> int | None:
        """The QCFS levels L of the converted ANN, the fewest of its layers' (None: a ReLU ANN)."""
        levels = {n.params.get("levels") for n in self.neuron_nodes} - {None}
        return min(levels) if levels else None

    def node_compression(self, timesteps: int) -> dict:
        """Levels per step of each neuron node: ``L / T`` for a QCFS layer of ``L`` levels, else 1.

        Compressed, a neuron's threshold is ``lambda * T / L`` and its net count by step ``t`` at most
        ``L * t / T``, so that after any T its count is the QCFS level ``L * y / lambda``: the ANN exactly.

        - ``T < L``, with neurons that fire bursts of at least ``L / T`` spikes: at ``T = 1`` it fires the level
          in one burst, never a spike that a later one cancels (at ``T = L`` inputs that change over the steps
          cost such pairs).
        - ``T > L``, with signed IF bursts (the neurons that keep their net count under the ceiling): more time
          never hurts. Uncompressed, the T-step SNN would quantise each layer at T levels rather than the L it was
          trained with, and lose accuracy as T grows (the default run: 90.5, 85.2, 83.8 % at T = 2, 4, 8).
          Every node is compressed by its own ``L / T``, whatever the other nodes' L: a T that compresses only
          some of them measured worse in a probe (``../shared/PROBES.md``).
        """
        def levels_per_step(levels):
            if levels is None or timesteps == levels:
                return 1.0
            if timesteps < levels:
                return levels / timesteps if self.max_spikes * timesteps >= levels else 1.0
            return levels / timesteps if self.neuron == "signed_if" and self.max_spikes > 1 else 1.0

        return {n.name: levels_per_step(n.params.get("levels")) for n in self.neuron_nodes}

    def compression(self, timesteps: int) -> float:
        """The most levels per step of any neuron node at ``timesteps`` (:meth:`node_compression`); 1: none."""
        return max(self.node_compression(timesteps).values(), default=1.0)

    def compressed(self, timesteps: int) -> bool:
        """Whether any neuron node is compressed at ``timesteps``: such a T is not the start of a longer run, so
        it must be simulated on its own."""
        return any(c != 1 for c in self.node_compression(timesteps).values())

    def _node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def _input_of(self, node):
        return self._node(node.inputs[0])

    def call(self, images, training=None):
        result = self.simulate(images, self.timesteps, training=bool(training))
        if training and self.rate_band and self.rate_weight:
            layer_rates = tf.reduce_mean(result["rates"], axis=[0, 1])
            excess = outside_band(layer_rates, self.rate_band) / self.rate_band[1]
            self.add_loss(self.rate_weight * tf.reduce_sum(excess ** 2))
        if training and self.rate_l2:
            self.add_loss(self.rate_l2 * tf.reduce_mean(result["rate_band_l2"]))
        if training and self.sparsity:
            spikes_per_neuron = tf.reduce_mean(tf.reduce_sum(result["activity"], axis=1), axis=0)  # (layers,)
            self.add_loss(self.sparsity * tf.reduce_sum(spikes_per_neuron * self.sop_weights()))
        return readout(result["logits"], self.readout_steps)

    def layer_costs(self) -> list:
        """Per-inference counts of every linear node (:func:`costs.graph_costs`)."""
        return graph_costs(self.nodes, self.graph["output"])

    def activity(self, spikes_per_layer, timesteps: int, events_per_layer=None) -> list:
        """The activity records of :func:`costs.activity_costs` for measured spikes per image and neuron layer
        over ``timesteps`` steps (:func:`costs.network_activity`); ``events_per_layer``: the measured messages
        (``simulate``'s ``events``), which graded-spike devices pay instead of spikes."""
        neurons = [(n.name, size) for n, size in zip(self.neuron_nodes, self.neurons_per_layer())]
        signed = self.neuron == "signed_if"
        payload = (math.ceil(math.log2(self.max_spikes + 1)) if self.max_spikes > 1 else 0) + int(signed)
        return network_activity(self.layer_costs(), neurons, spikes_per_layer, timesteps, self.tau is not None,
                                events_per_layer, payload)

    def layer_levels(self) -> dict:
        """The QCFS levels of each neuron layer by name (None where it has none)."""
        return {n.name: n.params.get("levels") for n in self.neuron_nodes}

    def sop_weights(self) -> np.ndarray:
        """Synaptic operations per ANN MAC that one spike per neuron of each neuron layer causes
        (:func:`costs.sop_weights`)."""
        return np.asarray(sop_weights(self.layer_costs(), self.neurons_per_layer()), np.float32)

    def neurons_per_layer(self) -> list:
        return [int(np.prod(n.shape)) for n in self.neuron_nodes]

    def evaluate(self, images=None, labels=None, timesteps=None, batch_size=None, **keras_options):
        """Accuracy of this SNN on ``images`` and class-index ``labels`` at ``timesteps`` (default: its own), with
        its spikes per image and firing rates: ``{"accuracy", "timesteps", "images", "spikes_per_image",
        "firing_rate_hz"}`` (:func:`evaluation.evaluate_images`). ``images`` may also be a tf.data Dataset of
        ``(images, labels)`` batches. Called with any other keyword (``verbose``, ``return_dict``, ...: the way
        Keras's ``fit`` validates) it is Keras's own ``evaluate`` of the compiled loss and metrics."""
        if keras_options:  # fit's validation passes x= and y= by name
            x, y = keras_options.pop("x", images), keras_options.pop("y", labels)
            return super().evaluate(x, y, batch_size=batch_size, **keras_options)
        return evaluate_images(self, images, labels, timesteps, 32 if batch_size is None else batch_size)

    def export_nir(self, path, timesteps=None, approximate=False):
        """Write this SNN to ``path`` as a NIR graph to be run for ``timesteps`` steps (default: its own) and return
        the graph (:func:`nir_io.to_nir`); what NIR cannot express is one :class:`~snn4vision.errors.UserError`.
        ``approximate``: signed IF neurons become plain IF neurons and bursts single spikes
        (:func:`nir_io.approximated`; measure what that costs with the returned graph's network)."""
        exported = nir_io.approximated(self)[0] if approximate else self
        try:
            graph = nir_io.to_nir(exported, timesteps)
        except UserError as exc:  # the messages name the pipeline's flag
            raise UserError(str(exc).replace("pass --approximate", "pass approximate=True")) from None
        nir_io.write_nir(path, graph)
        return graph

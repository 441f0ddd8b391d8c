"""Spiking simulators of the converted VGG-16: ours (fast) and keras-spiking's (naive).

Neuron and synapse arithmetic follow keras-spiking 0.3 exactly:
``v <- v + relu(h) * dt; n = floor(v); v <- v - n; spikes = n / dt`` with
initial voltages ``stateless_uniform([batch, ...], seed=(s, s))``, then the
low-pass synapse ``y <- (1 - a) * spikes + a * y`` with ``a = exp(-dt / tau)``
and ``y`` starting at zero. In training, spikes pass the gradient of the
ReLU (spiking-aware training, as keras-spiking does).

For ANNs trained with QCFS (``snn4vision.layers.QCFS``) the neuron is
integrate-and-fire instead (``neuron="if"``): ``v <- v + h``; a spike
(output ``lambda``) when ``v >= lambda``, reset by subtraction, initial
membrane ``lambda / 2``, no synaptic filter.

``neuron="signed_if"`` adds negative spikes with memory (as in Wang et al.,
IJCAI 2022, "signed neuron with memory"): a neuron whose membrane is below
0 and that has fired more positive than negative spikes so far emits a
spike of ``-lambda`` and adds ``lambda`` back to its membrane. It corrects
the neuron's early overshoot when later inputs are lower (the "unevenness
error" of QCFS conversion): whenever the final membrane lies in
``[0, lambda)``, the spike count after T steps is exactly
``clip(floor(mean input * T / lambda + 1/2), 0, T)``, the QCFS level of
the neuron's mean input at ``L = T``. For constant input it never fires a
negative spike, so it equals ``"if"``.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from .conversion import FoldedNetwork, scaled_weights
from .costs import sop_weights, vgg_layer_costs


#: Neuron models: keras-spiking's SpikingActivation("relu"), or (signed) integrate-and-fire for QCFS ANNs.
NEURONS = ("keras_spiking", "if", "signed_if")
#: The integrate-and-fire neurons of QCFS networks.
IF_NEURONS = ("if", "signed_if")


def layer_seed(seed: int, layer: int) -> int:
    """Seed of the initial voltages of neuron layer ``layer``."""
    return seed * 1000 + layer + 1


def keras_spiking_step(voltage, rates, dt: float):
    """One step of keras-spiking's SpikingActivation: returns (voltage, spike count, output)."""
    voltage = voltage + rates * dt
    count = tf.floor(voltage)
    return voltage - count, count, count / dt


def if_step(voltage, current, threshold, net_count=None, max_spikes=1, steps_done=None):
    """One step of an integrate-and-fire neuron with reset by subtraction.

    Returns (voltage, spike count, output): a spike carries ``threshold``.
    Unsigned (``net_count`` None) the count is 0 or 1. Signed, ``net_count``
    is each neuron's positive minus negative spikes before this step, and the
    count is -1 where the membrane is below 0 and ``net_count > 0``.

    Signed neurons may fire bursts of up to ``max_spikes`` spikes of either
    sign in one step (``floor(v / threshold)`` up, ``ceil(-v / threshold)``
    down), keeping the net count within ``[0, steps_done]`` (``steps_done``
    counts this step): the membrane then ends every step in
    ``[0, threshold)`` unless a bound holds it, and the net count after T
    steps is exactly ``clip(floor(sum of inputs / threshold + 1/2), 0, T)``.
    """
    voltage = voltage + current
    if max_spikes == 1:
        count = tf.cast(voltage >= threshold, voltage.dtype)
        if net_count is not None:
            count -= tf.cast(tf.logical_and(voltage < 0.0, net_count > 0.0), voltage.dtype)
    else:
        room = tf.minimum(float(max_spikes), tf.cast(steps_done, voltage.dtype) - net_count)
        up = tf.clip_by_value(tf.floor(voltage / threshold), 0.0, room)
        down = tf.nn.relu(tf.minimum(tf.minimum(tf.math.ceil(-voltage / threshold), net_count), float(max_spikes)))
        count = up - down
    return voltage - count * threshold, count, count * threshold


def outside_band(values, band):
    """How far each of ``values`` lies outside ``band = (low, high)``: 0 inside it."""
    low, high = band
    return tf.nn.relu(low - values) + tf.nn.relu(values - high)


@tf.custom_gradient
def _straight_through(rates, spikes):
    """Forward: ``spikes`` exactly; backward: the gradient goes to ``rates``."""
    return tf.identity(spikes), lambda grad: (grad, tf.zeros_like(spikes))


@tf.keras.utils.register_keras_serializable(package="snn4vision")
class SpikingVGG(tf.keras.Model):
    """The converted VGG-16 as a spiking network, simulated step-major.

    Input: images ``(batch, h, w, 3)`` (constant over time). ``call`` returns
    the read-out logits ``(batch, classes)``: the mean of the last
    ``readout_steps`` per-step logits (``None``: all steps).
    :meth:`simulate` returns per-step logits ``(batch, time, classes)`` and
    spike counts ``(batch, time, layers)``.

    The first conv sees the analog image, which does not change over time,
    so it is computed once. One loop over time runs every later layer at
    batch ``batch`` and keeps state only for neurons (voltages) and
    synapses (filter levels).

    ``tau``: synaptic time constant in seconds, per neuron and trainable
    (``None``: no synapse); ``train_tau`` / ``train_dt`` make the time
    constants / the step length trainable (dt gets its gradient through the
    synaptic filters, as in keras-spiking). ``rate_band``: ``(low, high)`` Hz; in training,
    adds ``rate_weight * sum_l ((max(low - r_l, 0) + max(r_l - high, 0)) / high)^2``
    where ``r_l`` is layer ``l``'s mean filtered rate. ``sparsity``: in training, adds
    ``sparsity`` x the measured synaptic operations per ANN MAC, each layer's spikes per neuron
    (straight-through) weighted by the synaptic operations one spike causes (:func:`costs.sop_weights`).
    ``rate_l2``: in training, keras-spiking's ranged L2 activity regulariser as SNN4Space puts it on every
    spiking activation: ``rate_l2`` x the sum over steps and neurons of the squared distance of each
    neuron's output (``n / dt`` Hz) from the ``rate_band``, per image (keras-spiking neurons only).
    """

    def __init__(self, channels, pool_after, num_classes, image_size, timesteps=8, dt=0.001, tau=0.1,
                 seed=0, readout_steps=None, rate_band=None, rate_weight=0.0, train_tau=True, train_dt=False,
                 neuron="keras_spiking", max_spikes=1, sparsity=0.0, rate_l2=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}, got {neuron!r}")
        if neuron in IF_NEURONS and tau is not None:
            raise ValueError("integrate-and-fire (QCFS) neurons take no synaptic filter: use tau=None")
        if rate_l2 and (neuron != "keras_spiking" or not rate_band):
            raise ValueError("rate_l2 regularises keras-spiking neurons' rates towards a rate_band: give both")
        if int(max_spikes) < 1 or (int(max_spikes) > 1 and neuron != "signed_if"):
            raise ValueError(f"max_spikes must be 1, or more for signed_if neurons; got {max_spikes} for {neuron}")
        self.neuron = neuron
        self.max_spikes = int(max_spikes)
        self.channels = [int(c) for c in channels]
        self.pool_after = [bool(p) for p in pool_after]
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
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
        self.shapes = []
        size = self.image_size
        for c, pool in zip(self.channels, self.pool_after):
            self.shapes.append((size, size, c))
            size = size // 2 if pool else size
        c_in = 3
        self.kernels, self.biases, self.taus = [], [], []
        for i, (c, shape) in enumerate(zip(self.channels, self.shapes)):
            self.kernels.append(self.add_weight(name=f"kernel_{i}", shape=(3, 3, c_in, c)))
            self.biases.append(self.add_weight(name=f"bias_{i}", shape=(c,), initializer="zeros"))
            if self.tau is not None:
                self.taus.append(self.add_weight(
                    name=f"tau_{i}", shape=(1, *shape), initializer=tf.keras.initializers.Constant(self.tau),
                    trainable=self.train_tau,
                    constraint=tf.keras.constraints.NonNeg()))
            c_in = c
        self.logits_kernel = self.add_weight(name="logits_kernel", shape=(c_in, self.num_classes))
        # The step length as a weight, so that it can be trained (with train_dt); float32 like keras-spiking's.
        self.dt_weight = self.add_weight(name="dt", shape=(), initializer=tf.keras.initializers.Constant(self.dt),
                                         trainable=self.train_dt, constraint=tf.keras.constraints.NonNeg())
        # Hz per unit of ANN activation, per layer (rate normalisation); not trained.
        self.gains = self.add_weight(name="gains", shape=(len(self.channels),), initializer="ones", trainable=False)
        # Integrate-and-fire thresholds (QCFS lambda) per layer; used when neuron == "if".
        self.thresholds = self.add_weight(name="thresholds", shape=(len(self.channels),), initializer="ones",
                                          trainable=False)

    @classmethod
    def from_folded(cls, net: FoldedNetwork, image_size: int, **kwargs) -> "SpikingVGG":
        model = cls([k.shape[-1] for k in net.kernels], net.pool_after, net.logits_kernel.shape[-1], image_size,
                    **kwargs)
        model.set_folded(net)
        return model

    def set_folded(self, net: FoldedNetwork) -> None:
        for variable, value in zip(self.kernels + self.biases, net.kernels + net.biases):
            variable.assign(value)
        self.logits_kernel.assign(net.logits_kernel)
        self.gains.assign(np.asarray(net.gains, np.float32))
        if net.thresholds:
            self.thresholds.assign(np.asarray(net.thresholds, np.float32))

    def effective_weights(self):
        """Kernels, biases and logits kernel with the gains applied (what the neurons see)."""
        gains = tf.unstack(self.gains)
        return scaled_weights(self.kernels, self.biases, self.logits_kernel, gains)

    def get_config(self):
        return {"channels": self.channels, "pool_after": self.pool_after, "num_classes": self.num_classes,
                "image_size": self.image_size, "timesteps": self.timesteps, "dt": self.dt, "tau": self.tau,
                "seed": self.seed, "readout_steps": self.readout_steps, "rate_band": self.rate_band,
                "rate_weight": self.rate_weight, "sparsity": self.sparsity, "rate_l2": self.rate_l2,
                "train_tau": self.train_tau, "train_dt": self.train_dt,
                "neuron": self.neuron, "max_spikes": self.max_spikes, "name": self.name}

    # ------------------------------------------------------------------
    def simulate(self, images, timesteps=None, training=False, return_outputs=False):
        """Run ``timesteps`` steps; returns ``{"logits": (B,T,C), "spikes": (B,T,L), "rates": (B,T,L),
        "activity": (B,T,L)}``.

        ``spikes`` counts spikes per image, step and layer; ``rates`` is each
        layer's mean filtered output (Hz) per step; ``activity`` is each layer's
        spikes per neuron and step, differentiable in training (straight-through). With ``return_outputs``,
        ``"outputs"`` holds each layer's output averaged over time, in the
        ANN's units (``(B, h, w, c)`` per layer), for comparison with the ANN.
        """
        timesteps = self.timesteps if timesteps is None else timesteps
        images = tf.convert_to_tensor(images, tf.float32)
        batch = tf.shape(images)[0]
        dt = tf.maximum(self.dt_weight, 1e-8)
        kernels, biases, logits_kernel = self.effective_weights()
        first = tf.nn.conv2d(images, kernels[0], 1, "SAME") + biases[0]
        thresholds = tf.unstack(self.thresholds)
        signed = self.neuron == "signed_if"
        if self.neuron in IF_NEURONS:  # deterministic: half the threshold
            voltages = tuple(tf.fill(tf.concat([[batch], shape], 0), thresholds[i] / 2)
                             for i, shape in enumerate(self.shapes))
        else:
            voltages = tuple(
                tf.random.stateless_uniform(tf.concat([[batch], shape], 0), seed=(layer_seed(self.seed, i),) * 2)
                for i, shape in enumerate(self.shapes))
        # Filter levels (with a synapse), or the net spike counts of signed neurons (the state is one or the other).
        levels = tuple(tf.zeros(tf.concat([[batch], shape], 0)) for shape in self.shapes) if self.taus or signed else ()
        decays = [tf.exp(-dt / tf.maximum(tau, 1e-8)) for tau in self.taus]
        sums = tuple(tf.zeros(tf.concat([[batch], shape], 0)) for shape in self.shapes) if return_outputs else ()
        features = tf.TensorArray(tf.float32, size=timesteps)
        counts = tf.TensorArray(tf.float32, size=timesteps)
        rates = tf.TensorArray(tf.float32, size=timesteps)
        activity = tf.TensorArray(tf.float32, size=timesteps)
        band = training and self.rate_l2 > 0
        outside = tf.zeros([batch])  # per image: squared distance of the spike rates from the band, summed

        def step(t, voltages, levels, sums, features, counts, rates, activity, outside):
            new_voltages, new_levels, new_sums, step_counts, step_rates, step_activity = [], [], [], [], [], []
            x = None
            for i in range(len(self.kernels)):
                h = first if i == 0 else tf.nn.conv2d(x, kernels[i], 1, "SAME") + biases[i]
                if self.neuron in IF_NEURONS:
                    drive = tf.clip_by_value(h, 0.0, thresholds[i])
                    v, n, spikes = if_step(tf.stop_gradient(voltages[i]), tf.stop_gradient(h), thresholds[i],
                                           levels[i] if signed else None, self.max_spikes, t + 1)
                    if signed:
                        new_levels.append(levels[i] + n)
                else:
                    drive = tf.nn.relu(h)
                    v, n, spikes = keras_spiking_step(tf.stop_gradient(voltages[i]), tf.stop_gradient(drive), dt)
                new_voltages.append(v)
                fired = tf.abs(n)  # spikes of either sign
                if training:
                    spikes = _straight_through(drive, spikes)
                    # backward, spikes per step follow the drive in spike units (a spike carries the threshold,
                    # or 1 / dt): the gradient of the rate, as for the spikes themselves
                    unit = 1.0 / thresholds[i] if self.neuron in IF_NEURONS else dt
                    fired = _straight_through(drive * unit, fired)
                step_counts.append(tf.reduce_sum(fired, axis=[1, 2, 3]))
                step_activity.append(tf.reduce_mean(fired, axis=[1, 2, 3]))
                if band:
                    outside = outside + tf.reduce_sum(outside_band(spikes, self.rate_band) ** 2, axis=[1, 2, 3])
                if self.taus:
                    out = (1 - decays[i]) * spikes + decays[i] * levels[i]
                    new_levels.append(out)
                else:
                    out = spikes
                step_rates.append(tf.reduce_mean(out, axis=[1, 2, 3]))
                if return_outputs:
                    new_sums.append(sums[i] + out)
                x = tf.nn.avg_pool2d(out, 2, 2, "VALID") if self.pool_after[i] else out
            features = features.write(t, tf.reduce_mean(x, axis=[1, 2]))
            counts = counts.write(t, tf.stack(step_counts, axis=1))
            rates = rates.write(t, tf.stack(step_rates, axis=1))
            activity = activity.write(t, tf.stack(step_activity, axis=1))
            return (t + 1, tuple(new_voltages), tuple(new_levels), tuple(new_sums), features, counts, rates,
                    activity, outside)

        _, _, _, sums, features, counts, rates, activity, outside = tf.while_loop(
            lambda t, *_: t < timesteps, step,
            (tf.constant(0), voltages, levels, sums, features, counts, rates, activity, outside))
        per_step = tf.transpose(features.stack(), [1, 0, 2])
        result = {"logits": tf.einsum("btf,fc->btc", per_step, logits_kernel),
                  "spikes": tf.transpose(counts.stack(), [1, 0, 2]),
                  "rates": tf.transpose(rates.stack(), [1, 0, 2]),
                  "activity": tf.transpose(activity.stack(), [1, 0, 2])}
        if band:
            result["rate_band_l2"] = outside
        if return_outputs:
            gains = tf.unstack(self.gains)
            result["outputs"] = [total / (tf.cast(timesteps, tf.float32) * gains[i]) for i, total in enumerate(sums)]
        return result

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

    def sop_weights(self) -> np.ndarray:
        """Synaptic operations per ANN MAC that one spike per neuron of each layer causes
        (:func:`costs.sop_weights`)."""
        layers = vgg_layer_costs(self.channels, self.pool_after, self.image_size, self.num_classes)
        return np.asarray(sop_weights(layers), np.float32)

    def neurons_per_layer(self) -> list:
        return [int(np.prod(shape)) for shape in self.shapes]


def readout(per_step_logits, steps=None):
    """Mean of the last ``steps`` per-step logits ``(batch, time, classes)`` (None: all)."""
    if steps is not None:
        per_step_logits = per_step_logits[:, -steps:]
    return tf.reduce_mean(per_step_logits, axis=1)


def keras_spiking_model(model: SpikingVGG, timesteps: int | None = None):
    """The same network built the SNN4Space way from keras-spiking layers.

    Input ``(batch, time, h, w, 3)`` (the image repeated over time); output
    per-step logits ``(batch, time, classes)``. Every layer runs through
    ``TimeDistributed``; each neuron layer is ``SpikingActivation("relu")``
    seeded like ours, followed by ``Lowpass`` when ``model.tau`` is set.
    Weights are copied from ``model`` layer by layer.
    """
    import keras_spiking

    if model.neuron != "keras_spiking":
        raise ValueError("keras-spiking has no integrate-and-fire neuron with reset by subtraction: the naive "
                         "model exists for keras-spiking neurons only")
    L = tf.keras.layers
    inputs = tf.keras.Input((timesteps, model.image_size, model.image_size, 3))
    x = inputs
    convs, filters = [], []
    for i, (c, pool) in enumerate(zip(model.channels, model.pool_after)):
        conv = L.TimeDistributed(L.Conv2D(c, 3, padding="same"), name=f"conv_{i}")
        x = conv(x)
        convs.append(conv)
        x = keras_spiking.SpikingActivation("relu", dt=model.dt, seed=layer_seed(model.seed, i),
                                            name=f"spiking_{i}")(x)
        if model.tau is not None:
            lowpass = keras_spiking.Lowpass(model.tau, dt=model.dt, name=f"lowpass_{i}")
            x = lowpass(x)
            filters.append(lowpass)
        if pool:
            x = L.TimeDistributed(L.AveragePooling2D(2), name=f"pool_{i}")(x)
    x = L.TimeDistributed(L.GlobalAveragePooling2D(), name="gap")(x)
    logits = L.TimeDistributed(L.Dense(model.num_classes, use_bias=False), name="logits")
    outputs = logits(x)
    naive = tf.keras.Model(inputs, outputs, name="keras_spiking_vgg")
    kernels, biases, logits_kernel = model.effective_weights()
    for conv, kernel, bias in zip(convs, kernels, biases):
        conv.set_weights([kernel.numpy(), bias.numpy()])
    for lowpass, tau in zip(filters, model.taus):
        tau_weight = [w for w in lowpass.weights if "tau" in w.name][0]
        tau_weight.assign(tau)
    logits.set_weights([logits_kernel.numpy()])
    return naive

"""Spiking neuron models, one class each, selected by name (:data:`NEURONS`, :func:`neuron`).

A neuron knows its initial membrane, one step of its dynamics, the
differentiable rate that stands in for its spikes in training (the
straight-through "drive"), what one spike is worth in drive units (for
the spike counts' gradient) and how its counts are counted as spikes for
energy. The simulator
(:class:`snn4vision.simulation.SpikingNetwork`) calls only these, so a new
neuron is one class here, registered with :func:`registered`.

Every step takes the layer's input current ``h`` (ANN units times the
layer's gain) and returns ``(state, count, output)``: ``count`` is the signed
number of spikes per neuron in this step and ``output`` what the spikes
carry to the next layer.
"""
from __future__ import annotations

import tensorflow as tf

NEURONS: dict = {}


def sigmoid_surrogate_spike(x, alpha: float):
    """Heaviside step ``x >= 0`` forward; sigmoid surrogate gradient backward.

    The backward pass uses ``d/dx sigmoid(alpha * x) = alpha * s * (1 - s)``
    with ``s = sigmoid(alpha * x)`` (spikingjelly's ``surrogate.Sigmoid``).
    """
    @tf.custom_gradient
    def heaviside(v):
        def grad(dy):
            s = tf.sigmoid(alpha * v)
            return dy * alpha * s * (1.0 - s)

        return tf.cast(v >= 0.0, v.dtype), grad

    return heaviside(x)


def registered(cls):
    """Class decorator: make a neuron selectable by its ``name``."""
    NEURONS[cls.name] = cls
    return cls


def neuron(name: str, **settings) -> "Neuron":
    """The neuron called ``name`` (one of :data:`NEURONS`) with its settings."""
    if name not in NEURONS:
        raise ValueError(f"neuron must be one of {tuple(NEURONS)}, got {name!r}")
    return NEURONS[name](**settings)


def layer_seed(seed: int, layer: int) -> int:
    """Seed of the initial voltages of neuron layer ``layer``."""
    return seed * 1000 + layer + 1


class Neuron:
    """A spiking neuron model. ``thresholded``: it fires at a threshold (QCFS lambda) rather than at rate x dt;
    ``takes_synapse``: a low-pass synaptic filter may follow it; ``max_spikes``: spikes per step it may fire."""

    name = ""
    thresholded = True
    takes_synapse = False
    signed = False

    def __init__(self, max_spikes: int = 1):
        if int(max_spikes) != 1:
            raise ValueError(f"max_spikes above 1 needs signed_if neurons; {self.name} neurons fire one spike "
                             f"per step (got {max_spikes})")
        self.max_spikes = 1

    def initial_state(self, shape, threshold, seed: int):
        """The state at t = 0 for a layer of ``shape`` (batch included)."""
        return (tf.fill(shape, threshold / 2),)  # half the threshold: rounds like QCFS's +1/2 shift

    def drive(self, h, threshold):
        """The differentiable rate (per step, in output units) that the spikes follow in training."""
        return tf.clip_by_value(h, 0.0, threshold)

    def spike_unit(self, threshold, dt):
        """Spikes per unit of drive: the gradient of a spike count."""
        return 1.0 / threshold

    def step(self, state, h, threshold, dt, ceiling):
        """One step: ``(state, count, output)``. ``ceiling``: the most net spikes a neuron may have fired by the
        end of this step (the steps done, this one included; more where levels are compressed into fewer steps,
        :meth:`snn4vision.simulation.SpikingNetwork.compression`)."""
        raise NotImplementedError

    def spikes(self, count):
        """The spikes a step's ``count`` stands for in spike totals and energy: a negative spike is a spike too."""
        return tf.abs(count) if self.signed else count


@registered
class KerasSpikingNeuron(Neuron):
    """keras-spiking 0.3's ``SpikingActivation("relu")``, bit for bit: ``v <- v + relu(h) dt; n = floor(v);
    v <- v - n``; output ``n / dt``. Initial voltages ``stateless_uniform(shape, seed=(s, s))``."""

    name = "keras_spiking"
    thresholded = False
    takes_synapse = True

    def initial_state(self, shape, threshold, seed):
        return (tf.random.stateless_uniform(shape, seed=(seed, seed)),)

    def drive(self, h, threshold):
        return tf.nn.relu(h)

    def spike_unit(self, threshold, dt):
        return dt

    def step(self, state, h, threshold, dt, ceiling):
        voltage = state[0] + self.drive(h, threshold) * dt
        count = tf.floor(voltage)
        return (voltage - count,), count, count / dt


@registered
class IFNeuron(Neuron):
    """Integrate-and-fire with reset by subtraction: ``v <- v + h``; a spike carrying ``threshold`` when
    ``v >= threshold``. The neuron of QCFS conversion."""

    name = "if"

    def step(self, state, h, threshold, dt, ceiling):
        voltage = state[0] + h
        count = tf.cast(voltage >= threshold, voltage.dtype)
        return (voltage - count * threshold,), count, count * threshold


@registered
class SignedIFNeuron(Neuron):
    """IF with negative spikes and memory (Wang et al., IJCAI 2022), optionally in bursts.

    A neuron whose membrane is below 0 and that has fired more positive than negative spikes emits a spike of
    ``-threshold`` and adds ``threshold`` back. With ``max_spikes > 1`` it fires up to that many spikes of
    either sign per step (``floor(v / threshold)`` up, ``ceil(-v / threshold)`` down), keeping the net count in
    ``[0, ceiling]`` (``ceiling``: the steps done, or ``t * L / T`` with ``L`` levels compressed into ``T`` steps):
    the net count after T steps is then ``clip(floor(sum of inputs / threshold + 1/2), 0, last ceiling)``, the
    QCFS level of the mean input at L = T, whenever the final membrane lies in ``[0, threshold)``. The state
    holds the membrane and the net count.
    """

    name = "signed_if"
    signed = True

    def __init__(self, max_spikes: int = 1):
        if int(max_spikes) < 1:
            raise ValueError(f"max_spikes must be at least 1, got {max_spikes}")
        self.max_spikes = int(max_spikes)

    def initial_state(self, shape, threshold, seed):
        return (tf.fill(shape, threshold / 2), tf.zeros(shape))

    def step(self, state, h, threshold, dt, ceiling):
        voltage, net = state
        voltage = voltage + h
        if self.max_spikes == 1:
            count = tf.cast(voltage >= threshold, voltage.dtype)
            count -= tf.cast(tf.logical_and(voltage < 0.0, net > 0.0), voltage.dtype)
        else:
            room = tf.minimum(float(self.max_spikes), tf.cast(ceiling, voltage.dtype) - net)
            up = tf.clip_by_value(tf.floor(voltage / threshold), 0.0, room)
            down = tf.nn.relu(tf.minimum(tf.minimum(tf.math.ceil(-voltage / threshold), net),
                                         float(self.max_spikes)))
            count = up - down
        return (voltage - count * threshold, net + count), count, count * threshold


@registered
class LIFNeuron(Neuron):
    """Leaky integrate-and-fire: ``v <- leak * v + h``; a spike carrying ``threshold`` when ``v >= threshold``,
    then reset by subtraction (``reset="subtract"``) or to 0 (``"zero"``). ``leak`` in [0, 1] is the membrane's
    decay per step (1: the IF neuron).

    With ``surrogate_alpha`` the spike passes spikingjelly's sigmoid surrogate gradient backward
    (:func:`sigmoid_surrogate_spike`) and the reset is detached from the gradient: the neuron of the directly
    trained spiking transformers (:class:`snn4vision.layers.LIF`), trained through time.
    """

    name = "lif"
    RESETS = ("subtract", "zero")

    def __init__(self, max_spikes: int = 1, leak: float = 0.9, reset: str = "subtract",
                 surrogate_alpha: float | None = None):
        super().__init__(max_spikes)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1], got {leak}")
        if reset not in self.RESETS:
            raise ValueError(f"reset must be one of {self.RESETS}, got {reset!r}")
        self.leak, self.reset, self.surrogate_alpha = float(leak), reset, surrogate_alpha

    def step(self, state, h, threshold, dt, ceiling):
        voltage = self.leak * state[0] + h
        if self.surrogate_alpha is None:
            count = fired = tf.cast(voltage >= threshold, voltage.dtype)
        else:
            count = sigmoid_surrogate_spike(voltage - threshold, self.surrogate_alpha)
            fired = tf.stop_gradient(count)
        voltage = voltage - fired * threshold if self.reset == "subtract" else voltage * (1.0 - fired)
        return (voltage,), count, count * threshold

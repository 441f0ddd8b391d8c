"""What the layers of the directly trained spiking transformers share: the :class:`LIF` layer, the
:class:`Recorder` of their activity, the reference code's initialisers and normalisation, and folding time
into the batch; shapes are ``(batch, time, ...)``."""
from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from ..neurons import LIFNeuron

# --------------------------------------------------------------------------
# Directly trained spiking transformers: LIF neurons and the blocks of
# Spikformer (Zhou et al., ICLR 2023) and the Spike-driven Transformer
# (Yao et al., NeurIPS 2023), with the semantics of their reference code.
# --------------------------------------------------------------------------

#: Spikformer's fixed attention scale (no softmax).
ATTENTION_SCALE = 0.125


def _register(cls):
    return tf.keras.utils.register_keras_serializable(package="snn4vision")(cls)


def _per_image(x):
    """Sum over every axis but the batch: ``(batch,)``."""
    return tf.reduce_sum(tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1]), axis=1)


def _size(shape) -> int:
    return int(np.prod([int(d) for d in shape]))


def _batch_norm(name: str):
    """BatchNorm with PyTorch's defaults (epsilon 1e-5, momentum 0.1 = Keras 0.9), over the last axis.

    On ``(batch, time, ...)`` tensors the statistics are pooled over batch,
    time and every spatial/token axis, as the reference code does by folding
    time into the batch.
    """
    return tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _dense(units: int, name: str, use_bias: bool = True):
    """A Dense (or 1x1 conv) initialised as the reference code (normal, std 0.02; zero bias)."""
    return tf.keras.layers.Dense(units, use_bias=use_bias, name=name,
                                 kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.02))


def _conv3x3(filters: int, name: str):
    """A bias-free 3x3 'same' conv initialised as PyTorch's default (uniform, bound 1/sqrt(fan_in))."""
    return tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name,
                                  kernel_initializer=tf.keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"))


def fold_time(x):
    """``(batch, time, ...)`` -> ``(batch * time, ...)``."""
    return tf.reshape(x, [-1] + list(x.shape[2:]))


def unfold_time(x, timesteps: int):
    """``(batch * time, ...)`` -> ``(batch, time, ...)``."""
    return tf.reshape(x, [-1, timesteps] + list(x.shape[1:]))


def max_pool_3x3(x):
    """PyTorch's ``MaxPool2d(3, stride=2, padding=1)`` on ``(n, h, w, c)``: pads one pixel on
    every side (with -inf), unlike Keras' 'same', which pads only bottom/right."""
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    return tf.nn.max_pool2d(x, 3, 2, "VALID")


def scoped(record, name: str):
    """``record.scope(name)``, or nothing when not recording."""
    return contextlib.nullcontext() if record is None else record.scope(name)


class Recorder:
    """Collects the activity of one forward pass, for firing rates and energy.

    Entries (per image tensors of shape ``(batch,)``):
    ``neurons``: a spiking layer's spike count and its neurons per timestep;
    ``synapse``: a conv/dense layer's summed input (spikes, or spike counts
    where residual sums feed it; ``None`` for the analog image), its
    connections (MACs of one dense evaluation per step), its input size per
    step and how many times it is evaluated;
    ``attention``: accumulates of a spiking attention product and the MACs
    of the same product on dense (non-spiking) hardware per step.
    """

    def __init__(self):
        self.entries = []
        self._scopes = []

    @contextlib.contextmanager
    def scope(self, name: str):
        """Prefix the names recorded inside with ``name/``."""
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    def _add(self, entry: dict) -> None:
        entry["name"] = "/".join(self._scopes + [entry["name"]])
        self.entries.append(entry)

    def neurons(self, name: str, spikes):
        self._add({"kind": "neurons", "name": name, "spikes": _per_image(spikes),
                             "neurons": _size(spikes.shape[2:])})

    def synapse(self, name: str, inputs, outputs, kernel_area: int = 1, analog: bool = False, evaluations: int = 1):
        """``inputs``/``outputs``: per-step tensors with time on axis 1 (or none, for the analog image)."""
        feature_axes = 1 if analog else 2
        in_shape, out_shape = inputs.shape[feature_axes:], outputs.shape[feature_axes:]
        connections = _size(out_shape) * kernel_area * int(in_shape[-1])
        self._add({"kind": "synapse", "name": name, "events": None if analog else _per_image(inputs),
                             "connections": connections, "inputs": _size(in_shape), "evaluations": evaluations})

    def attention(self, name: str, accumulates, dense_macs: int):
        self._add({"kind": "attention", "name": name, "accumulates": accumulates,
                             "dense_macs": dense_macs})


@_register
class LIF(tf.keras.layers.Layer):
    """Multi-step leaky integrate-and-fire neurons (spikingjelly's ``MultiStepLIFNode``).

    Input: ``(batch, time, ...)`` input currents; output: spikes (0/1,
    float32) of the same shape. With ``V[-1] = 0``::

        H[t] = V[t-1] + (X[t] - V[t-1]) / tau
        S[t] = H[t] >= threshold
        V[t] = H[t] * (1 - S[t])            (hard reset to 0), or
        V[t] = H[t] - S[t] * threshold      (reset="soft")

    The reset is detached from the gradient; the spike's gradient is the
    sigmoid surrogate ``alpha * s * (1 - s)``, ``s = sigmoid(alpha * (H - threshold))``.
    Everything is computed in float32, vectorised over batch and features;
    only the recurrence loops over time (statically unrolled).
    """

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, alpha: float = 4.0, reset: str = "hard", **kwargs):
        super().__init__(**kwargs)
        if tau < 1.0:
            raise ValueError(f"LIF tau must be at least 1, got {tau}")
        if threshold <= 0:
            raise ValueError(f"LIF threshold must be positive, got {threshold}")
        if reset not in ("hard", "soft"):
            raise ValueError(f"LIF reset must be 'hard' or 'soft', got {reset!r}")
        self.tau, self.threshold, self.alpha, self.reset = float(tau), float(threshold), float(alpha), reset

    def build(self, input_shape):
        if len(input_shape) < 3 or input_shape[1] is None:
            raise ValueError(f"LIF needs (batch, time, ...) inputs with a known number of timesteps, got {input_shape}")
        super().build(input_shape)

    def call(self, inputs):
        # One unstack (gradient: one stack) instead of T strided slices, whose gradients would each
        # write a full (batch, time, ...) tensor: 2.5x faster forward + backward.
        currents = tf.unstack(tf.cast(inputs, tf.float32) / self.tau, axis=1)
        # H = V + (X - V) / tau is the LIF neuron's V * (1 - 1/tau) + X / tau
        cell = LIFNeuron(leak=1.0 - 1.0 / self.tau, reset="zero" if self.reset == "hard" else "subtract",
                         surrogate_alpha=self.alpha)
        state, spikes = (tf.zeros_like(currents[0]),), []
        for current in currents:
            state, fired, _ = cell.step(state, current, self.threshold, None, None)
            spikes.append(fired)
        return tf.stack(spikes, axis=1)

    def get_config(self):
        return super().get_config() | {"tau": self.tau, "threshold": self.threshold, "alpha": self.alpha,
                                       "reset": self.reset}


class _SpikingLayer(tf.keras.layers.Layer):
    """Base of the transformer layers: shared neuron settings and activity recording."""

    def __init__(self, tau: float = 2.0, alpha: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        self.tau, self.alpha = float(tau), float(alpha)

    def _lif(self, name: str, threshold: float = 1.0) -> LIF:
        return LIF(self.tau, threshold, self.alpha, name=name)

    def _fire(self, lif: LIF, x, record: Recorder | None):
        spikes = lif(x)
        if record is not None:
            record.neurons(lif.name, spikes)
        return spikes

    def _linear(self, dense, bn, x, training, record: Recorder | None):
        """``BN(dense(x))`` on ``(batch, time, tokens, features)``."""
        y = bn(dense(x), training=training)
        if record is not None:
            record.synapse(dense.name, x, y)
        return y

    def get_config(self):
        return super().get_config() | {"tau": self.tau, "alpha": self.alpha}

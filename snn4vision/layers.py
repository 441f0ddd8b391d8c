"""Custom Keras layers of snn4vision.

``QCFS``: the quantisation-clip-floor-shift activation (Bu et al., ICLR 2022)
for ANNs that convert to integrate-and-fire SNNs with (almost) no loss at
small T.
"""
from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from .neurons import LIFNeuron


@tf.custom_gradient
def floor_straight_through(x):
    """``floor(x)`` forward, identity gradient backward."""
    return tf.floor(x), lambda grad: grad


def qcfs_formula(x, threshold, levels, floor=tf.floor):
    """``threshold * clip(floor(x / threshold * levels + 1/2) / levels, 0, 1)``: QCFS in one place, in the
    operation order that the integrate-and-fire conversion reproduces exactly."""
    return tf.clip_by_value(floor(x / threshold * levels + 0.5) / levels, 0.0, 1.0) * threshold


def qcfs_trainable(x, threshold, levels: int):
    """QCFS by its definition, with a straight-through floor (so that lambda learns, as in the reference code)."""
    return qcfs_formula(x, threshold, tf.cast(levels, x.dtype), floor_straight_through)


@tf.keras.utils.register_keras_serializable(package="snn4vision")
class QCFS(tf.keras.layers.Layer):
    """Quantisation-clip-floor-shift activation with a trainable threshold.

    ``y = lambda / L * clip(floor(x * L / lambda + 0.5), 0, L)``, computed as
    ``lambda * clip(floor(x / lambda * L + 0.5) / L, 0, 1)`` with a
    straight-through gradient through the floor (so ``lambda`` learns, as in
    the reference code). ``lambda`` is one scalar per layer. While the
    non-trainable ``quantising`` weight is 0 the layer is a plain ReLU (a
    warm-up phase of training); it is 1 unless training sets it.

    Input and output: any shape, e.g. ``(batch, h, w, channels)`` in an ANN
    (no time axis). An integrate-and-fire neuron with threshold ``lambda``,
    reset by subtraction and initial membrane ``lambda / 2`` emits exactly
    ``L * y / lambda`` spikes in ``T = L`` steps for a constant input ``x``.
    """

    def __init__(self, levels: int = 8, initial_threshold: float = 8.0, **kwargs):
        super().__init__(**kwargs)
        if int(levels) < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        self.levels = int(levels)
        self.initial_threshold = float(initial_threshold)
        # Weight of this layer's expected spikes per neuron in the training loss (training.add_sparsity_penalty).
        # A training setting, not part of the layer's config.
        self.sparsity = 0.0

    def build(self, input_shape):
        self.threshold = self.add_weight(name="threshold", shape=(),
                                         initializer=tf.keras.initializers.Constant(self.initial_threshold))
        # 1: QCFS; 0: plain ReLU, for a ReLU warm-up before quantisation (training.TrainConfig.qcfs_warmup).
        # A variable rather than a Python flag, so that the switch needs no retracing and is checkpointed.
        self.quantising = self.add_weight(name="quantising", shape=(), trainable=False,
                                          initializer=tf.keras.initializers.Constant(1.0))
        super().build(input_shape)

    def call(self, inputs):
        lam = tf.convert_to_tensor(self.threshold)

        def quantised():
            return qcfs_trainable(inputs, lam, self.levels)

        def relu():  # 0 * lambda: a zero gradient for the threshold rather than None (no optimizer warnings)
            return tf.nn.relu(inputs) + 0.0 * lam

        outputs = tf.cond(self.quantising > 0.5, quantised, relu)
        if self.sparsity:
            # expected spikes per neuron at T = L: y * L / lambda; during the ReLU warm-up lambda is not chosen yet,
            # so the batch's largest activation stands in for it (scale-free, as BatchNorm follows)
            scale = self.quantising / lam + (1.0 - self.quantising) / tf.stop_gradient(tf.reduce_max(outputs) + 1e-6)
            self.add_loss(self.sparsity * tf.reduce_mean(outputs) * self.levels * scale)
        return outputs

    def start_quantising(self, threshold: float) -> None:
        """End the ReLU warm-up: quantise from now on, with ``threshold`` as lambda."""
        self.threshold.assign(threshold)
        self.quantising.assign(1.0)

    def get_config(self):
        return super().get_config() | {"levels": self.levels, "initial_threshold": self.initial_threshold}


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


class _PatchSplitting(_SpikingLayer):
    """Shared structure of the two patch-splitting stems.

    Input: ``(batch, h, w, c)`` images, constant over time (the first conv +
    BN is computed once and broadcast to every step), or ``(batch, time, h,
    w, c)`` frames. Output: ``(batch, time, tokens, dim)`` with
    ``tokens = (h / 2^p) * (w / 2^p)``, ``p`` the number of poolings.
    ``pooling``: four flags, a 3x3 stride-2 max pooling after stage 1-4
    (the reference code's ``pooling_stat``; "0011" is its CIFAR setting).
    """

    def __init__(self, dim: int, timesteps: int = 4, pooling: str = "0011", **kwargs):
        super().__init__(**kwargs)
        if dim % 8:
            raise ValueError(f"dim must be a multiple of 8, got {dim}")
        if len(pooling) != 4 or set(pooling) - {"0", "1"}:
            raise ValueError(f"pooling must be four 0/1 flags such as '0011', got {pooling!r}")
        self.dim, self.timesteps, self.pooling = int(dim), int(timesteps), pooling
        widths = [dim // 8, dim // 4, dim // 2, dim]
        self.convs = [_conv3x3(c, f"conv{i}") for i, c in enumerate(widths)]
        self.bns = [_batch_norm(f"bn{i}") for i in range(4)]
        self.lifs = [self._lif(f"lif{i}") for i in range(4)]
        self.rpe_conv, self.rpe_bn = _conv3x3(dim, "rpe_conv"), _batch_norm("rpe_bn")
        self.rpe_lif = self._lif("rpe_lif")

    def build(self, input_shape):
        if len(input_shape) not in (4, 5) or input_shape[-1] is None:
            raise ValueError("patch splitting needs (batch, h, w, c) or (batch, time, h, w, c) input, "
                             f"got {input_shape}")
        super().build(input_shape)

    def _conv_bn(self, i: int, x, training, record, conv=None, bn=None):
        """conv + BN of stage ``i`` on ``(batch, time, h, w, c)``."""
        conv, bn = conv or self.convs[i], bn or self.bns[i]
        y = unfold_time(bn(conv(fold_time(x)), training=training), x.shape[1])
        if record is not None:
            record.synapse(conv.name, x, y, kernel_area=9)
        return y

    def _stem(self, inputs, training, record):
        """Stage 0's conv + BN, computed once for a static image, then ``(batch, time, h, w, c)``."""
        if len(inputs.shape) == 5:
            frames = tf.cast(inputs, tf.float32)
            y = self._conv_bn(0, frames, training, None)
            evaluations, image = frames.shape[1], frames[:, 0]
        else:
            image = tf.cast(inputs, tf.float32)
            y0 = self.bns[0](self.convs[0](image), training=training)
            y = tf.repeat(y0[:, None], self.timesteps, axis=1)
            evaluations = 1
        if record is not None:
            record.synapse(self.convs[0].name, image, y[:, 0], kernel_area=9, analog=True,
                           evaluations=evaluations)
        return y

    def _pool(self, i: int, x):
        return unfold_time(max_pool_3x3(fold_time(x)), x.shape[1]) if self.pooling[i] == "1" else x

    @staticmethod
    def tokens(x):
        """``(batch, time, h, w, c)`` -> ``(batch, time, h * w, c)``."""
        return tf.reshape(x, [-1, x.shape[1], x.shape[2] * x.shape[3], x.shape[4]])

    def get_config(self):
        return super().get_config() | {"dim": self.dim, "timesteps": self.timesteps, "pooling": self.pooling}


@_register
class SpikingPatchSplitting(_PatchSplitting):
    """Spikformer's spiking patch splitting (SPS) with relative position embedding.

    Four conv3x3 (no bias) + BN + LIF stages, ``c -> dim/8 -> dim/4 -> dim/2
    -> dim`` (pooling after stages 3 and 4 by default), giving spikes
    ``x_feat``; then ``x_feat + LIF(BN(conv3x3(x_feat)))``.
    Input ``(batch, h, w, c)`` or ``(batch, time, h, w, c)``; output
    ``(batch, time, tokens, dim)`` (spike counts 0, 1 or 2).
    """

    def call(self, inputs, training=None, record: Recorder | None = None):
        x = self._pool(0, self._fire(self.lifs[0], self._stem(inputs, training, record), record))
        for i in range(1, 4):
            x = self._pool(i, self._fire(self.lifs[i], self._conv_bn(i, x, training, record), record))
        rpe = self._fire(self.rpe_lif, self._conv_bn(0, x, training, record, self.rpe_conv, self.rpe_bn), record)
        return self.tokens(x + rpe)


@_register
class SpikeDrivenPatchSplitting(_PatchSplitting):
    """The Spike-driven Transformer's patch splitting (membrane shortcut).

    Stages 1-3 are conv3x3 (no bias) + BN + LIF, ``c -> dim/8 -> dim/4 ->
    dim/2`` (pooling on the spikes after stage 3 by default); stage 4 is
    conv + BN to ``dim`` with the pooling on the BN output and no LIF, so
    ``x_feat`` is real-valued. Position embedding:
    ``x_feat + BN(conv3x3(LIF(x_feat)))``.
    Input ``(batch, h, w, c)`` or ``(batch, time, h, w, c)``; output
    ``(batch, time, tokens, dim)`` (real-valued membrane input).
    """

    def call(self, inputs, training=None, record: Recorder | None = None):
        x = self._pool(0, self._fire(self.lifs[0], self._stem(inputs, training, record), record))
        for i in range(1, 3):
            x = self._pool(i, self._fire(self.lifs[i], self._conv_bn(i, x, training, record), record))
        feat = self._pool(3, self._conv_bn(3, x, training, record))
        spikes = self._fire(self.lifs[3], feat, record)
        return self.tokens(feat + self._conv_bn(0, spikes, training, record, self.rpe_conv, self.rpe_bn))


class _TokenLayer(_SpikingLayer):
    """Base of layers on ``(batch, time, tokens, dim)``."""

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[1] is None or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} needs (batch, time, tokens, dim) input with known time and dim, "
                             f"got {input_shape}")
        super().build(input_shape)


def _attention_product(q, k, v):
    """``(Q K^T) V`` per head on ``(batch, time, tokens, heads, head_dim)``, computed as ``Q (K^T V)``."""
    return tf.einsum("btnhd,bthde->btnhe", q, tf.einsum("btnhd,btnhe->bthde", k, v))


class _Attention(_TokenLayer):
    """Base of the two self-attention layers: ``dim`` split into ``heads`` contiguous channel groups."""

    def __init__(self, dim: int, heads: int, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads = int(dim), int(heads)

    def get_config(self):
        return super().get_config() | {"dim": self.dim, "heads": self.heads}


@_register
class SpikingSelfAttention(_Attention):
    """Spikformer's spiking self-attention (SSA).

    ``Q, K, V = LIF(BN(Dense(x)))`` (with bias); heads take contiguous
    channel slices; per head ``(Q K^T) V * 0.125`` (no softmax); heads
    merged; ``LIF`` with threshold 0.5; then ``LIF(BN(Dense))``.
    Input and output ``(batch, time, tokens, dim)``; the output is spikes.

    Without a softmax the product is associative, so it is computed as
    ``Q (K^T V)``: identical values (integer spike products, exact in
    float32) at ``tokens * dim * dim / heads`` instead of
    ``tokens^2 * dim`` multiply-adds.
    """

    def __init__(self, dim: int, heads: int, **kwargs):
        super().__init__(dim, heads, **kwargs)
        self.q, self.k, self.v, self.proj = (_dense(dim, n) for n in ("q", "k", "v", "proj"))
        self.q_bn, self.k_bn, self.v_bn, self.proj_bn = (_batch_norm(f"{n}_bn") for n in ("q", "k", "v", "proj"))
        self.q_lif, self.k_lif, self.v_lif, self.proj_lif = (self._lif(f"{n}_lif") for n in ("q", "k", "v", "proj"))
        self.attn_lif = self._lif("attn_lif", threshold=0.5)

    def _heads(self, x):
        return tf.reshape(x, [-1, x.shape[1], x.shape[2], self.heads, self.dim // self.heads])

    def call(self, inputs, training=None, record: Recorder | None = None):
        q, k, v = (self._heads(self._fire(lif, self._linear(dense, bn, inputs, training, record), record))
                   for dense, bn, lif in ((self.q, self.q_bn, self.q_lif), (self.k, self.k_bn, self.k_lif),
                                          (self.v, self.v_bn, self.v_lif)))
        attended = _attention_product(q, k, v) * ATTENTION_SCALE
        if record is not None:
            per_head = self.dim // self.heads
            pairs = _per_image(tf.reduce_sum(k, -1) * tf.reduce_sum(v, -1))  # K^T V: one add per (k, v) spike pair
            record.attention("attention", pairs + _per_image(q) * per_head,
                             2 * _size(inputs.shape[2:]) * per_head)
        x = self._fire(self.attn_lif, tf.reshape(attended, [-1] + inputs.shape[1:].as_list()), record)
        return self._fire(self.proj_lif, self._linear(self.proj, self.proj_bn, x, training, record), record)


@_register
class SpikeDrivenSelfAttention(_Attention):
    """The Spike-driven Transformer's spike-driven self-attention (SDSA), with its shortcut.

    ``s = LIF(x)``; ``Q, K, V = LIF(BN(Dense without bias (s)))`` (1x1
    convs); per channel ``KV = LIF_0.5(sum over tokens of K * V)`` (heads
    are channel groups, so this is per head and channel); output
    ``BN(Dense with bias (Q * KV)) + x``. Input and output
    ``(batch, time, tokens, dim)`` membrane values.
    """

    def __init__(self, dim: int, heads: int, **kwargs):
        super().__init__(dim, heads, **kwargs)
        self.q, self.k, self.v = (_dense(dim, n, use_bias=False) for n in ("q", "k", "v"))
        self.proj = _dense(dim, "proj")
        self.q_bn, self.k_bn, self.v_bn, self.proj_bn = (_batch_norm(f"{n}_bn") for n in ("q", "k", "v", "proj"))
        self.shortcut_lif = self._lif("shortcut_lif")
        self.q_lif, self.k_lif, self.v_lif = (self._lif(f"{n}_lif") for n in ("q", "k", "v"))
        self.kv_lif = self._lif("kv_lif", threshold=0.5)

    def call(self, inputs, training=None, record: Recorder | None = None):
        s = self._fire(self.shortcut_lif, inputs, record)
        q, k, v = (self._fire(lif, self._linear(dense, bn, s, training, record), record)
                   for dense, bn, lif in ((self.q, self.q_bn, self.q_lif), (self.k, self.k_bn, self.k_lif),
                                          (self.v, self.v_bn, self.v_lif)))
        masked = k * v
        kv = self._fire(self.kv_lif, tf.reduce_sum(masked, axis=2, keepdims=True), record)
        if record is not None:  # masks are free; the token sum costs one add per surviving spike
            record.attention("attention", _per_image(masked), 3 * _size(inputs.shape[2:]))
        return self._linear(self.proj, self.proj_bn, q * kv, training, record) + inputs


@_register
class SpikingMLP(_TokenLayer):
    """Spikformer's MLP: ``LIF(BN(fc2(LIF(BN(fc1(x))))))``, hidden ``mlp_ratio * dim``.

    Input ``(batch, time, tokens, dim)``; output spikes of the same shape.
    """

    def __init__(self, dim: int, mlp_ratio: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.mlp_ratio = int(dim), int(mlp_ratio)
        self.fc1, self.fc2 = _dense(dim * mlp_ratio, "fc1"), _dense(dim, "fc2")
        self.fc1_bn, self.fc2_bn = _batch_norm("fc1_bn"), _batch_norm("fc2_bn")
        self.fc1_lif, self.fc2_lif = self._lif("fc1_lif"), self._lif("fc2_lif")

    def call(self, inputs, training=None, record: Recorder | None = None):
        x = self._fire(self.fc1_lif, self._linear(self.fc1, self.fc1_bn, inputs, training, record), record)
        return self._fire(self.fc2_lif, self._linear(self.fc2, self.fc2_bn, x, training, record), record)

    def get_config(self):
        return super().get_config() | {"dim": self.dim, "mlp_ratio": self.mlp_ratio}


@_register
class SpikeDrivenMLP(SpikingMLP):
    """The Spike-driven Transformer's MLP: ``BN(fc2(LIF(BN(fc1(LIF(x)))))) + x``.

    Input and output ``(batch, time, tokens, dim)`` membrane values.
    """

    def call(self, inputs, training=None, record: Recorder | None = None):
        x = self._fire(self.fc1_lif, inputs, record)
        x = self._fire(self.fc2_lif, self._linear(self.fc1, self.fc1_bn, x, training, record), record)
        return self._linear(self.fc2, self.fc2_bn, x, training, record) + inputs


@_register
class SpikformerBlock(_TokenLayer):
    """``x = x + SSA(x); x = x + MLP(x)`` on ``(batch, time, tokens, dim)`` (spike sums, no norm layers)."""

    attention_class, mlp_class = SpikingSelfAttention, SpikingMLP

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.mlp_ratio = int(dim), int(heads), int(mlp_ratio)
        neuron = {"tau": self.tau, "alpha": self.alpha}
        self.attention = self.attention_class(dim, heads, name="attention", **neuron)
        self.mlp = self.mlp_class(dim, mlp_ratio, name="mlp", **neuron)

    def _attend(self, x, training, record):
        with scoped(record, self.attention.name):
            return self.attention(x, training=training, record=record)

    def _mlp(self, x, training, record):
        with scoped(record, self.mlp.name):
            return self.mlp(x, training=training, record=record)

    def call(self, inputs, training=None, record: Recorder | None = None):
        x = inputs + self._attend(inputs, training, record)
        return x + self._mlp(x, training, record)

    def get_config(self):
        return super().get_config() | {"dim": self.dim, "heads": self.heads, "mlp_ratio": self.mlp_ratio}


@_register
class SpikeDrivenBlock(SpikformerBlock):
    """``x = MLP(SDSA(x))`` on ``(batch, time, tokens, dim)``: both shortcuts are inside, on the membrane."""

    attention_class, mlp_class = SpikeDrivenSelfAttention, SpikeDrivenMLP

    def call(self, inputs, training=None, record: Recorder | None = None):
        return self._mlp(self._attend(inputs, training, record), training, record)


@_register
class SpikingClassifierHead(_TokenLayer):
    """Classification head on ``(batch, time, tokens, dim)`` -> ``(batch, classes)`` logits.

    ``spiking=False`` (Spikformer): mean over tokens and time, then Dense.
    ``spiking=True`` (Spike-driven Transformer): mean over tokens, LIF,
    Dense at every step, mean over time.
    """

    def __init__(self, num_classes: int, spiking: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.spiking = int(num_classes), bool(spiking)
        self.dense = _dense(num_classes, "dense")
        self.lif = self._lif("lif") if spiking else None

    def call(self, inputs, training=None, record: Recorder | None = None):
        x = tf.reduce_mean(inputs, axis=2)
        if not self.spiking:
            mean = tf.reduce_mean(x, axis=1)
            logits = self.dense(mean)
            if record is not None:  # one dense evaluation on analog (averaged) input
                record.synapse("dense", mean, logits, analog=True)
            return logits
        spikes = self._fire(self.lif, x, record)
        logits = self.dense(spikes)
        if record is not None:
            record.synapse("dense", spikes, logits)
        return tf.reduce_mean(logits, axis=1)

    def get_config(self):
        return super().get_config() | {"num_classes": self.num_classes, "spiking": self.spiking}

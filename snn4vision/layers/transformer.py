"""The token layers of the spiking transformers on ``(batch, time, tokens, dim)``: self-attention, MLPs,
blocks and the classifier head of Spikformer and the Spike-driven Transformer."""
from __future__ import annotations

import tensorflow as tf

from .common import (ATTENTION_SCALE, Recorder, _SpikingLayer, _batch_norm, _dense, _per_image, _register, _size,
                     scoped)

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

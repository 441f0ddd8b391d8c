"""The patch-splitting stems of Spikformer (:class:`SpikingPatchSplitting`) and the Spike-driven Transformer
(:class:`SpikeDrivenPatchSplitting`): images or per-step frames to ``(batch, time, tokens, dim)``."""
from __future__ import annotations

import tensorflow as tf

from .common import Recorder, _SpikingLayer, _batch_norm, _conv3x3, _register, fold_time, max_pool_3x3, unfold_time

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

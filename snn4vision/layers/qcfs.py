"""Custom Keras layers of snn4vision.

``QCFS``: the quantisation-clip-floor-shift activation (Bu et al., ICLR 2022)
for ANNs that convert to integrate-and-fire SNNs with (almost) no loss at
small T.
"""
from __future__ import annotations

import tensorflow as tf

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
        # Weight of this layer's expected spikes per neuron in the training loss (quantisation.add_sparsity_penalty).
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

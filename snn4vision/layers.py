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


@tf.keras.utils.register_keras_serializable(package="snn4vision")
class QCFS(tf.keras.layers.Layer):
    """Quantisation-clip-floor-shift activation with a trainable threshold.

    ``y = lambda / L * clip(floor(x * L / lambda + 0.5), 0, L)``, computed as
    ``lambda * clip(floor(x / lambda * L + 0.5) / L, 0, 1)`` with a
    straight-through gradient through the floor (so ``lambda`` learns, as in
    the reference code). ``lambda`` is one scalar per layer.

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

    def build(self, input_shape):
        self.threshold = self.add_weight(name="threshold", shape=(),
                                         initializer=tf.keras.initializers.Constant(self.initial_threshold))
        super().build(input_shape)

    def call(self, inputs):
        lam = self.threshold
        levels = tf.cast(self.levels, inputs.dtype)
        quantised = floor_straight_through(inputs / lam * levels + 0.5) / levels
        return tf.clip_by_value(quantised, 0.0, 1.0) * lam

    def get_config(self):
        return super().get_config() | {"levels": self.levels, "initial_threshold": self.initial_threshold}

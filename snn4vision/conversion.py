"""ANN -> SNN conversion of the SNN4Space VGG-16: the folded network.

Conversion works on a *folded* description of the ANN
(:class:`FoldedNetwork`): BatchNorm is folded into the preceding conv
(exact), and optional data-based normalisation sets a per-layer gain so that
a high percentile of each ReLU activation maps to ``max_rate`` Hz. Because
``relu(g * h) = g * relu(h)`` for ``g > 0``, the gains become a rescaling of
the weights (:func:`scaled_weights`), and the folded network with rate
(ReLU) neurons reproduces the ANN's logits exactly. QCFS ANNs keep their
thresholds for integrate-and-fire neurons.

The spiking simulators that run a folded network are in
:mod:`snn4vision.simulation`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError


# --------------------------------------------------------------------------
# Folding
# --------------------------------------------------------------------------
@dataclass
class FoldedNetwork:
    """The ANN as plain arrays: conv kernels and biases, pooling flags, logits kernel.

    ``pool_after[i]``: a 2x2 average pooling follows neuron layer ``i``.
    ``gains[i]``: layer ``i``'s pre-activation is multiplied by this (in Hz per
    unit of ANN activation); see :func:`scaled_weights`. The weights stay in
    the ANN's scale, which keeps fine-tuning well conditioned.
    """

    kernels: list
    biases: list
    pool_after: list
    logits_kernel: np.ndarray
    gains: list = field(default_factory=list)
    thresholds: list | None = None  # QCFS thresholds (lambda) per layer; None: ReLU network
    levels: int | None = None  # QCFS levels L

    @property
    def num_layers(self) -> int:
        return len(self.kernels)


def _layer_problem(layer, seen_conv: bool) -> str | None:
    """Why ``layer`` cannot be part of a converted network (None: it can)."""
    import tensorflow as tf

    from .layers import QCFS

    L = tf.keras.layers
    if isinstance(layer, (L.InputLayer, L.GlobalAveragePooling2D, QCFS)):
        return None
    if isinstance(layer, L.Conv2D):
        if layer.strides != (1, 1) or layer.padding != "same" or layer.activation.__name__ != "linear":
            return "only stride-1 'same' convs without a built-in activation convert"
        return None
    if isinstance(layer, L.BatchNormalization):
        return None if seen_conv else "BatchNorm before any conv cannot be folded"
    if isinstance(layer, L.ReLU):
        if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return "only a plain ReLU converts to spiking neurons"
        return None
    if isinstance(layer, L.AveragePooling2D):
        return None if layer.pool_size == (2, 2) and layer.strides == (2, 2) else "only 2x2 stride-2 average pooling"
    if isinstance(layer, L.Dense):
        return "the logits layer must be bias-free" if layer.use_bias else None
    return f"{type(layer).__name__} is not part of the SNN4Space VGG-16 pattern"


def unconvertible_layers(model) -> list:
    """``["name: reason", ...]`` for every layer of ``model`` that cannot be converted."""
    problems, seen_conv = [], False
    for layer in model.layers:
        problem = _layer_problem(layer, seen_conv)
        seen_conv = seen_conv or type(layer).__name__ == "Conv2D"
        if problem:
            problems.append(f"{layer.name}: {problem}")
    return problems


def fold_ann(model) -> FoldedNetwork:
    """Fold a trained VGG-16 (BatchNorm included) into a :class:`FoldedNetwork`.

    Accepts the layer pattern the SNN4Space VGG-16 produces (Conv2D
    [BatchNorm] ReLU-or-QCFS [AveragePooling2D 2x2] ... GlobalAveragePooling2D,
    Dense without bias). Every layer that does not fit is named in one
    UserError; none is skipped silently.
    """
    import tensorflow as tf

    from .layers import QCFS

    problems = unconvertible_layers(model)
    if problems:
        raise UserError("cannot convert " + "; ".join(problems))
    L = tf.keras.layers
    kernels, biases, pool_after, logits, thresholds, levels = [], [], [], None, [], set()
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            kernel, bias = layer.get_weights() if layer.use_bias else (layer.get_weights()[0], None)
            kernels.append(kernel.astype(np.float32))
            biases.append(np.zeros(kernel.shape[-1], np.float32) if bias is None else bias.astype(np.float32))
            pool_after.append(False)
        elif isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = (w.astype(np.float64) for w in layer.get_weights())
            factor = gamma / np.sqrt(var + layer.epsilon)
            kernels[-1] = (kernels[-1] * factor).astype(np.float32)
            biases[-1] = ((biases[-1] - mean) * factor + beta).astype(np.float32)
        elif isinstance(layer, QCFS):
            if float(layer.quantising.numpy()) != 1.0:
                raise UserError(f"QCFS layer {layer.name} is still in its ReLU warm-up (not quantising): convert a "
                                "network whose training finished")
            thresholds.append(float(layer.threshold.numpy()))
            levels.add(layer.levels)
        elif isinstance(layer, L.AveragePooling2D):
            pool_after[-1] = True
        elif isinstance(layer, L.Dense):
            logits = layer.get_weights()[0].astype(np.float32)
    if logits is None or not kernels:
        raise UserError("the model has no conv layers or no logits layer: is it an SNN4Space VGG-16?")
    if thresholds and (len(thresholds) != len(kernels) or len(levels) != 1):
        raise UserError("mixed activations: every conv must be followed by QCFS (same levels) or every one by ReLU")
    return FoldedNetwork(kernels, biases, pool_after, logits, [1.0] * len(kernels),
                         thresholds or None, levels.pop() if levels else None)


def qcfs(x, threshold, levels):
    """The QCFS activation (forward only), as :class:`snn4vision.layers.QCFS` computes it."""
    from .layers import qcfs_formula

    return qcfs_formula(x, threshold, levels)


def scaled_weights(kernels, biases, logits_kernel, gains):
    """Weights that make layer ``l`` compute ``gains[l]`` times the ANN's pre-activation.

    Layer ``l`` receives activations scaled by ``g_{l-1}`` (the image: 1), so
    its kernel is multiplied by ``g_l / g_{l-1}`` and its bias by ``g_l``; the
    logits kernel is divided by the last gain, so the logits are the ANN's.
    Works on NumPy arrays and TensorFlow tensors alike.
    """
    previous = 1.0
    scaled_kernels, scaled_biases = [], []
    for kernel, bias, gain in zip(kernels, biases, gains):
        scaled_kernels.append(kernel * (gain / previous))
        scaled_biases.append(bias * gain)
        previous = gain
    return scaled_kernels, scaled_biases, logits_kernel / previous


def rate_forward(net: FoldedNetwork, images, return_activations: bool = False):
    """Run the folded network with ReLU (rate) neurons: the ANN's logits.

    ``images``: ``(batch, h, w, 3)``. Returns logits ``(batch, classes)``
    and optionally the list of ReLU outputs.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(images, tf.float32)
    activations = []
    kernels, biases, logits_kernel = scaled_weights(net.kernels, net.biases, net.logits_kernel,
                                                    np.asarray(net.gains, np.float32))
    for i, (kernel, bias, pool) in enumerate(zip(kernels, biases, net.pool_after)):
        h = tf.nn.conv2d(x, kernel, 1, "SAME") + bias
        x = qcfs(h, net.thresholds[i], net.levels) if net.thresholds else tf.nn.relu(h)
        activations.append(x)
        if pool:
            x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
    logits = tf.reduce_mean(x, axis=[1, 2]) @ logits_kernel
    return (logits, activations) if return_activations else logits


def activation_percentiles(net: FoldedNetwork, batches, percentile: float = 99.9, max_values: int = 2_000_000,
                           seed: int = 0) -> list:
    """Per-layer ``percentile`` of the ReLU activations over ``batches`` of images.

    Each layer contributes at most ``max_values`` values (a seeded random
    subsample), which keeps memory bounded on large layers.
    """
    rng = np.random.default_rng(seed)
    collected = [[] for _ in range(net.num_layers)]
    for images in batches:
        _, activations = rate_forward(net, images, return_activations=True)
        for store, act in zip(collected, activations):
            store.append(act.numpy().ravel())
    result = []
    for store in collected:
        values = np.concatenate(store)
        if values.size > max_values:
            values = values[rng.choice(values.size, max_values, replace=False)]
        result.append(float(max(np.percentile(values, percentile), 1e-6)))
    return result


def normalise(net: FoldedNetwork, percentiles: list, max_rate: float) -> FoldedNetwork:
    """Set gains so that activation ``percentiles[l]`` of layer ``l`` maps to ``max_rate`` Hz.

    ``g_l = max_rate / p_l``; the logits are unchanged (see :func:`scaled_weights`).
    ``percentiles`` must be measured on ``net`` with all gains 1.
    """
    if len(percentiles) != net.num_layers:
        raise ValueError("one percentile per layer is needed")
    gains = [float(max_rate / p) for p in percentiles]
    return dataclasses.replace(net, gains=gains)

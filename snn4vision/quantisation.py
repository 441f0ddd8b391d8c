"""Training a QCFS network to convert: the sparsity penalty on the converted SNN's expected synaptic operations,
and the end of the ReLU warm-up, where each QCFS layer gets the threshold that fits its activations."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from . import layer_graph
from .costs import graph_costs, sop_weights
from .layers import QCFS


def add_sparsity_penalty(model, strength: float) -> None:
    """Add ``strength`` x the converted SNN's expected synaptic operations per ANN MAC to the model's loss.

    Each neuron layer's expected spikes per neuron is weighted by the synaptic operations one spike causes
    (:func:`costs.sop_weights`), so the penalty targets SOPs, not spikes. QCFS layers count ``y * L /
    lambda``, their spikes at ``T = L`` (during the ReLU warm-up, with the batch's largest activation for
    lambda); ReLU layers count ``y`` over the batch's largest activation, their rate per step after
    normalisation.
    """
    graph = layer_graph.build_graph(model, trained=False)
    neurons = [int(np.prod(n.shape)) for n in graph.neurons]
    weights = sop_weights(graph_costs(graph.nodes, graph.output), neurons)
    for node, weight in zip(graph.neurons, weights, strict=True):
        layer = model.get_layer(node.name.removesuffix("/relu"))
        if isinstance(layer, QCFS):
            layer.sparsity = strength * weight
        else:
            y = layer.output
            model.add_loss(strength * weight * tf.reduce_mean(y) / tf.stop_gradient(tf.reduce_max(y) + 1e-6))


def qcfs_layers(model) -> list:
    """The QCFS layers of a model, in order."""

    return [layer for layer in model.layers if isinstance(layer, QCFS)]


#: Candidate thresholds of :func:`start_quantising`: these percentiles of a layer's ReLU activations.
THRESHOLD_PERCENTILES = (90.0, 95.0, 97.5, 99.0, 99.5, 99.9, 99.99)


def quantisation_threshold(activations: np.ndarray, levels: int) -> float:
    """The lambda among :data:`THRESHOLD_PERCENTILES` of ``activations`` (ReLU outputs) whose QCFS with ``levels``
    levels reproduces them with the least squared error (clipping the tail against coarser steps)."""
    candidates = np.unique(np.maximum(np.percentile(activations, THRESHOLD_PERCENTILES), 1e-3))
    errors = [np.mean((lam / levels * np.clip(np.floor(activations / lam * levels + 0.5), 0, levels)
                       - activations) ** 2) for lam in candidates]
    return float(candidates[int(np.argmin(errors))])


def start_quantising(model, images, max_values: int = 200_000, seed: int = 0) -> list:
    """End the ReLU warm-up of a QCFS model: each layer's lambda by :func:`quantisation_threshold`.

    ``images``: batches of training images (the activations are taken in inference mode; each layer keeps a
    seeded subsample of at most ``max_values``). Returns the thresholds.
    """
    layers = qcfs_layers(model)
    probe = tf.keras.Model(model.inputs, [layer.input for layer in layers])
    collected = [[] for _ in layers]
    for batch in images:
        for store, x in zip(collected, probe(batch, training=False)):
            store.append(tf.nn.relu(x).numpy().ravel())
    rng = np.random.default_rng(seed)
    thresholds = []
    for layer, store in zip(layers, collected):
        values = np.concatenate(store)
        if values.size > max_values:
            values = values[rng.choice(values.size, max_values, replace=False)]
        thresholds.append(quantisation_threshold(values, layer.levels))
        layer.start_quantising(thresholds[-1])
    return thresholds

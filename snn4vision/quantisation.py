"""Training a QCFS network to convert: the sparsity penalty on the converted SNN's expected synaptic operations,
the end of the ReLU warm-up, where each QCFS layer gets the threshold that fits its activations, and which
layers lose most accuracy there (:func:`quantisation_sensitivity`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from . import layer_graph
from .costs import graph_costs, sop_weights
from .errors import UserError
from .layers import QCFS


def add_sparsity_penalty(model, strength: float) -> None:
    """Add ``strength`` x the converted SNN's expected synaptic operations per ANN MAC to the model's loss.

    Each neuron layer's expected spikes per neuron is weighted by the synaptic operations one spike causes
    (:func:`costs.sop_weights`), so the penalty targets SOPs, not spikes. QCFS layers count ``y * L /
    lambda``, their spikes at ``T = L`` (during the ReLU warm-up, with the batch's largest activation for
    lambda); ReLU layers count ``y`` over the batch's largest activation, their rate per step after
    normalisation.
    """
    for name, weight in spike_costs(model).items():
        layer = model.get_layer(name)
        if isinstance(layer, QCFS):
            layer.sparsity = strength * weight
        else:
            y = layer.output
            model.add_loss(strength * weight * tf.reduce_mean(y) / tf.stop_gradient(tf.reduce_max(y) + 1e-6))


def spike_costs(model) -> dict:
    """``{activation layer name: SOP/MAC}``: the synaptic operations per ANN MAC that one spike per neuron of
    that layer adds in the converted SNN (:func:`costs.sop_weights`)."""
    graph = layer_graph.build_graph(model, trained=False)
    neurons = [int(np.prod(n.shape)) for n in graph.neurons]
    weights = sop_weights(graph_costs(graph.nodes, graph.output), neurons)
    # sop_weights gives one weight per entry of ``neurons``, built from graph.neurons, so the two align by
    # construction (zip's strict= would need Python 3.10; setup.cfg admits 3.9)
    return {node.name.removesuffix("/relu"): weight for node, weight in zip(graph.neurons, weights)}


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


@dataclass(frozen=True)
class LayerSensitivity:
    """One QCFS layer quantised alone: its levels, the threshold :func:`start_quantising` gave it, the
    network's accuracy with every other QCFS layer a ReLU, and what its spikes cost (:func:`spike_costs`: the
    SOP/MAC of one spike per neuron)."""

    layer: str
    levels: int
    threshold: float
    accuracy: float
    spike_cost: float


@dataclass(frozen=True)
class QuantisationSensitivity:
    """What quantising costs a network at the end of its ReLU warm-up (:func:`quantisation_sensitivity`)."""

    relu_accuracy: float  # no layer quantised
    quantised_accuracy: float  # every layer quantised, as training would quantise it
    layers: tuple  # LayerSensitivity, in the model's order

    def table(self) -> str:
        """A markdown table: each layer's levels, threshold, accuracy alone, the points it loses against the
        ReLU network, and the SOP/MAC of one spike per neuron."""
        rows = ["| layer | levels | threshold | accuracy, this layer quantised alone | points lost | "
                "SOP/MAC of one spike per neuron |", "|---|---|---|---|---|---|"]
        rows += [f"| {s.layer} | {s.levels} | {s.threshold:.3g} | {100 * s.accuracy:.1f} | "
                 f"{100 * (self.relu_accuracy - s.accuracy):.1f} | {s.spike_cost:.3g} |" for s in self.layers]
        return "\n".join(rows)


def _accuracy(model, batches: list) -> float:
    # called eagerly, not through model.predict: a layer's levels are a Python int, which a predict function
    # traced earlier would keep baked in after quantisation_sensitivity changes them
    correct = total = 0
    for images, labels in batches:
        predicted = np.argmax(model(images, training=False).numpy(), axis=-1)
        correct += int(np.sum(predicted == np.asarray(labels).reshape(-1)))
        total += len(predicted)
    return correct / total


def quantisation_sensitivity(model, calibration, evaluation, levels: dict | None = None,
                             seed: int = 0) -> QuantisationSensitivity:
    """Where quantising a QCFS network costs accuracy: each QCFS layer quantised alone, then all of them.

    ``model``: a QCFS network, typically at the end of its ReLU warm-up (a run's distillation teacher,
    ``checkpoints/ann/teacher.weights.h5``): every layer first gets the threshold of least quantisation error
    on ``calibration`` (image batches, as :func:`start_quantising` takes them). ``evaluation``: ``(images,
    labels)`` batches, read once. ``levels``: ``{layer name: levels}`` to try instead of the model's (for
    example more levels where spikes are cheap). The model's levels, thresholds and warm-up state are
    restored afterwards.
    """
    layers = qcfs_layers(model)
    if not layers:
        raise UserError("the model has no QCFS layer: build it with activation='qcfs' to measure what quantising "
                        "costs")
    levels = dict(levels or {})
    unknown = sorted(set(levels) - {layer.name for layer in layers})
    if unknown:
        raise UserError(f"no QCFS layer named {', '.join(unknown)}: the model's are "
                        f"{', '.join(layer.name for layer in layers)}")
    bad = sorted(name for name, value in levels.items() if not isinstance(value, (int, np.integer)) or value < 1)
    if bad:
        raise UserError(f"levels must be whole numbers of at least 1; got {', '.join(f'{n}={levels[n]}' for n in bad)}")
    costs = spike_costs(model)
    saved = [(layer.levels, float(layer.threshold.numpy()), float(layer.quantising.numpy())) for layer in layers]
    batches = [(tf.convert_to_tensor(x), y) for x, y in evaluation]
    try:
        for layer in layers:
            layer.levels = int(levels.get(layer.name, layer.levels))
            layer.quantising.assign(0.0)
        thresholds = start_quantising(model, calibration, seed=seed)
        quantised = _accuracy(model, batches)
        for layer in layers:
            layer.quantising.assign(0.0)
        relu = _accuracy(model, batches)
        alone = []
        for layer, threshold in zip(layers, thresholds):
            layer.quantising.assign(1.0)
            alone.append(LayerSensitivity(layer.name, layer.levels, threshold, _accuracy(model, batches),
                                          costs[layer.name]))
            layer.quantising.assign(0.0)
    finally:
        for layer, (steps, threshold, quantising) in zip(layers, saved):
            layer.levels = steps
            layer.threshold.assign(threshold)
            layer.quantising.assign(quantising)
    return QuantisationSensitivity(relu, quantised, tuple(alone))

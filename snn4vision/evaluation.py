"""Evaluation shared by every stage: classification metrics, and simulating and scoring a spiking network."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from .progress import Progress


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, per-class accuracy (recall) and the confusion matrix, as JSON-ready values."""
    matrix = confusion_matrix(labels, predictions, len(classes))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    total = int(matrix.sum())
    return {
        "accuracy": float(matrix.diagonal().sum() / total) if total else float("nan"),
        "num_images": total,
        "per_class_accuracy": {name: float(a) for name, a in zip(classes, per_class)},
        "confusion_matrix": matrix.tolist(),
    }


def diverging(num_classes: int, *losses: float) -> bool:
    """A non-finite loss, or one above 100 x the cross-entropy of guessing (ln C): no learning network gets there,
    and an exploding one gets there (8.7e13 after one epoch of SGD at 1e3) before it overflows."""
    bound = 100 * math.log(max(num_classes, 2))
    return any(not math.isfinite(loss) or loss > bound for loss in losses)


def simulate_split(model, batches, timesteps: int, label: str | None = None) -> dict:
    """Per-step logits and spike counts of ``model`` (a SpikingNetwork) on all ``batches``.

    ``label``: report progress (batches done) under this name.
    """
    simulate = tf.function(lambda x: model.simulate(x, timesteps), reduce_retracing=True)
    count = int(batches.cardinality()) if hasattr(batches, "cardinality") else -1
    progress = Progress(label, count if count > 0 else None) if label else None
    outputs = []
    for images, _ in batches:
        outputs.append(simulate(images))
        if progress:
            progress.update(len(outputs), "batches")
    if progress:
        progress.close()
    return {key: np.concatenate([o[key].numpy() for o in outputs]) for key in ("logits", "spikes", "events")
            if key in outputs[0]}


def readout_predictions(per_step_logits, steps: int) -> np.ndarray:
    """The class of the mean logit over the last ``steps`` steps of ``(images, time, classes)`` logits."""
    return np.asarray(per_step_logits)[:, -steps:].mean(axis=1).argmax(axis=1)


def readout_accuracy(per_step_logits, labels, steps: int) -> float:
    """Accuracy of the mean logit over the last ``steps`` steps of ``(images, time, classes)`` logits."""
    return float(np.mean(readout_predictions(per_step_logits, steps) == labels))


def network_readout_steps(model, timesteps: int) -> int:
    """The steps a spiking network's read-out averages in a run of ``timesteps``: its ``readout_steps`` (all
    steps when None), at most ``timesteps``."""
    return timesteps if model.readout_steps is None else min(model.readout_steps, timesteps)


def layer_spikes(spikes) -> np.ndarray:
    """Spikes per image of each layer, from ``(images, time, layers)`` counts."""
    return np.asarray(spikes).sum(axis=1).mean(axis=0)


def firing_rates(spikes_per_layer, neurons: list, timesteps: int, dt: float) -> list:
    """Mean firing rate (Hz) of each neuron layer."""
    return [float(s / n / (timesteps * dt)) for s, n in zip(spikes_per_layer, neurons)]


def ann_accuracy(ann, batches, labels) -> float:
    """Test accuracy of a Keras classifier on ``(image, label)`` batches."""
    return float(np.mean(ann.predict(batches, verbose=0).argmax(axis=1) == labels))


def readout_steps(timesteps: int, fraction: float) -> int:
    return max(1, math.ceil(fraction * timesteps))

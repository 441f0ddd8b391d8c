"""Evaluation shared by every stage: classification metrics, and simulating and scoring a spiking network."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from .errors import UserError
from .progress import Progress
from .resources import check_timesteps


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


#: A quantised network this many points (of validation accuracy) under the ReLU warm-up it started from has
#: collapsed: in every healthy training of the 5-fold cross-validation the best quantised epoch ended at most 3.7
#: points under its warm-up, and a spike penalty of 4 at L = 4 fell from 86.2 % to 49.7 % (docs/cross_validation.md).
COLLAPSE_POINTS = 10


def quantisation_record(history: list, first_quantised_epoch: int, sparsity: float) -> dict | None:
    """How the quantised epochs of a QCFS training with a ReLU warm-up compare with the warm-up, on validation.

    ``history``: ``metrics.json``'s entries (``epoch`` counts from 1); ``first_quantised_epoch``: 0-based
    (``TrainConfig.qcfs_from_epoch``). Returns the warm-up's last validation accuracy, the best quantised one and a
    ``warning`` (None unless the best quantised epoch is :data:`COLLAPSE_POINTS` or more under the warm-up), or
    None without a warm-up or a quantised epoch.
    """
    warmup = [e["val_accuracy"] for e in history if e["epoch"] == first_quantised_epoch]
    quantised = [e["val_accuracy"] for e in history if e["epoch"] > first_quantised_epoch]
    if first_quantised_epoch <= 0 or not warmup or not quantised:
        return None
    before, after = warmup[0], max(quantised)
    warning = None
    if round(100 * (before - after), 9) >= COLLAPSE_POINTS:  # rounded: 0.9 - 0.8 is 10 points, not 9.999...
        fix = (f"train again with a lower --sparsity (it is {sparsity:g})" if sparsity
               else "train again with more --levels")
        warning = (f"the quantised network's best validation accuracy, {100 * after:.1f} %, is "
                   f"{100 * (before - after):.1f} points under the {100 * before:.1f} % its ReLU warm-up ended "
                   f"with: it collapsed when it began to quantise (epoch {first_quantised_epoch + 1}); {fix}")
    return {"warmup_val_accuracy": before, "quantised_val_accuracy": after, "warning": warning}


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


# --------------------------------------------------------------------------
# Arrays from the Python API (snn4vision.api, SpikingNetwork.evaluate)
# --------------------------------------------------------------------------
def as_images(source, shape, what: str = "images", limit: int | None = None) -> tuple:
    """``(images, labels or None)`` as numpy arrays from an array ``(N, *shape)`` or an iterable (a tf.data
    Dataset, say) of images, image batches or ``(images, labels)`` batches; at most ``limit`` images. Anything
    else is one :class:`UserError` naming ``what`` and the shape wanted."""
    wanted = f"(N, {', '.join(str(int(d)) for d in shape)})"
    labels = None
    if isinstance(source, (np.ndarray, tf.Tensor, list)):
        images = _array(source, what, wanted)
    elif hasattr(source, "__iter__") and not isinstance(source, (str, bytes, dict)):
        images, labels = _collect(source, what, wanted, limit, len(shape))
    else:
        raise UserError(f"{what} must be an array {wanted} of images or a tf.data.Dataset of them, got "
                        f"{type(source).__name__}")
    if images.ndim == len(shape):  # one image
        images = images[None]
    if images.ndim != len(shape) + 1 or tuple(images.shape[1:]) != tuple(int(d) for d in shape):
        raise UserError(f"{what} have shape {tuple(images.shape)}: the network takes images {wanted}")
    if len(images) == 0:
        raise UserError(f"{what} are empty: pass at least one image")
    if limit is not None:
        images, labels = images[:limit], None if labels is None else labels[:limit]
    if not np.isfinite(images).all():
        raise UserError(f"{what} hold NaN or infinite values: pass finite pixel values")
    return images.astype(np.float32, copy=False), labels


def _array(value, what: str, wanted: str) -> np.ndarray:
    array = np.asarray(value.numpy() if isinstance(value, tf.Tensor) else value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise UserError(f"{what} must be numbers, an array {wanted}, got an array of {array.dtype}")
    return array


def _collect(batches, what: str, wanted: str, limit: int | None, rank: int) -> tuple:
    """Images (and labels, where the elements are pairs) of an iterable, stopping once ``limit`` are read."""
    images, labels, count = [], [], 0
    for element in batches:
        pair = isinstance(element, (tuple, list))
        x = _array(element[0] if pair else element, what, wanted)
        images.append(x[None] if x.ndim == rank else x)
        if pair and len(element) > 1:
            labels.append(np.atleast_1d(np.asarray(element[1])))
        count += len(images[-1])
        if limit is not None and count >= limit:
            break
    if not images:
        raise UserError(f"{what} are empty: pass at least one image")
    if len({x.shape[1:] for x in images}) > 1:
        raise UserError(f"{what} have images of several shapes: the network takes images {wanted}")
    return np.concatenate(images), (np.concatenate(labels) if len(labels) == len(images) else None)


def check_labels(labels, count: int, classes: int) -> np.ndarray:
    """``labels`` as class indices, one per image, each in ``[0, classes)``; else one :class:`UserError`."""
    if labels is None:
        raise UserError("labels are missing: pass one class index per image")
    labels = np.asarray(labels.numpy() if isinstance(labels, tf.Tensor) else labels)
    if labels.ndim == 2 and labels.shape[1] == classes and count > 0:
        raise UserError(f"labels are one-hot {labels.shape}: pass class indices, labels.argmax(axis=1)")
    if labels.ndim != 1 or len(labels) != count:
        raise UserError(f"labels have shape {labels.shape} for {count} images: pass one class index per image")
    if not np.issubdtype(labels.dtype, np.integer) and not (np.issubdtype(labels.dtype, np.floating)
                                                            and np.all(labels == np.round(labels))):
        raise UserError(f"labels must be whole class indices, got {labels.dtype} values")
    if labels.min() < 0 or labels.max() >= classes:
        raise UserError(f"labels run from {labels.min():g} to {labels.max():g}: the network has {classes} classes, "
                        f"0 to {classes - 1}")
    return labels.astype(np.int64)


def check_count(value, name: str) -> None:
    """``value`` is a whole number, 1 or more; else one :class:`UserError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name} must be a whole number, 1 or more, got {value!r}")


def array_batches(images: np.ndarray, batch_size: int) -> list:
    """``[(images, None), ...]`` in batches of ``batch_size``: what :func:`simulate_split` reads."""
    return [(images[i:i + batch_size], None) for i in range(0, len(images), batch_size)]


def evaluate_images(model, images, labels, timesteps: int | None = None, batch_size: int = 32) -> dict:
    """Accuracy of a spiking network on ``images`` and ``labels`` at ``timesteps`` (default: the model's), with its
    spikes per image and per-layer firing rates (Hz): :meth:`SpikingNetwork.evaluate
    <snn4vision.simulation.SpikingNetwork.evaluate>`."""
    timesteps = model.timesteps if timesteps is None else timesteps
    check_count(timesteps, "timesteps")
    check_timesteps(timesteps, "timesteps")
    check_count(batch_size, "batch_size")
    images, found = as_images(images, model.nodes[0].shape)
    labels = check_labels(found if labels is None else labels, len(images), model.num_classes)
    result = simulate_split(model, array_batches(images, batch_size), timesteps)
    spikes = layer_spikes(result["spikes"])
    return {"accuracy": readout_accuracy(result["logits"], labels, network_readout_steps(model, timesteps)),
            "timesteps": int(timesteps), "images": int(len(images)), "spikes_per_image": float(spikes.sum()),
            "firing_rate_hz": firing_rates(spikes, model.neurons_per_layer(), timesteps, model.dt)}

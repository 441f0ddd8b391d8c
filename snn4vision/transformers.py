"""Directly trained spiking transformers: the model and its measured activity.

:class:`SpikingTransformer` composes the layers of :mod:`snn4vision.layers`
into Spikformer (Zhou et al., ICLR 2023) or the Spike-driven Transformer
(Yao et al., NeurIPS 2023). Build them with
:func:`snn4vision.models.spikformer` and
:func:`snn4vision.models.spike_driven_transformer`.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from .layers import (Recorder, SpikeDrivenBlock, SpikeDrivenPatchSplitting, SpikformerBlock, SpikingClassifierHead,
                     SpikingPatchSplitting, scoped)

#: The two architectures: (patch splitting, block, spiking head).
KINDS = {
    "spikformer": (SpikingPatchSplitting, SpikformerBlock, False),
    "sdt": (SpikeDrivenPatchSplitting, SpikeDrivenBlock, True),
}


@tf.keras.utils.register_keras_serializable(package="snn4vision")
class SpikingTransformer(tf.keras.Model):
    """Patch splitting, ``depth`` transformer blocks and a classification head.

    Input: ``(batch, h, w, c)`` images in ``[0, 1]`` (RGB, or the bands of a multispectral run; the patch
    splitting's first conv takes its c input channels from the first batch; presented at every one
    of ``timesteps`` steps; the first conv + BN runs once) or ``(batch,
    time, h, w, c)`` frames. Output: ``(batch, num_classes)`` logits.
    ``kind``: ``"spikformer"`` or ``"sdt"`` (Spike-driven Transformer).
    """

    def __init__(self, kind: str, num_classes: int, depth: int = 2, dim: int = 256, heads: int = 8,
                 timesteps: int = 4, mlp_ratio: int = 4, pooling: str = "0011", tau: float = 2.0, alpha: float = 4.0,
                 **kwargs):
        kwargs.setdefault("name", kind)
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"unknown spiking transformer {kind!r}: use one of {', '.join(KINDS)}")
        for what, value, least in (("num_classes", num_classes, 2), ("depth", depth, 1), ("dim", dim, 8),
                                   ("heads", heads, 1), ("timesteps", timesteps, 1), ("mlp_ratio", mlp_ratio, 1)):
            if int(value) < least:
                raise ValueError(f"{what} must be at least {least}, got {value}")
        if dim % 8 or dim % heads:
            raise ValueError(f"dim must be a multiple of 8 and of heads ({heads}), got {dim}")
        self.kind, self.num_classes, self.depth = kind, int(num_classes), int(depth)
        self.dim, self.heads = int(dim), int(heads)
        self.timesteps, self.mlp_ratio, self.pooling, self.tau, self.alpha = (int(timesteps), int(mlp_ratio), pooling,
                                                                             float(tau), float(alpha))
        patch_class, block_class, spiking_head = KINDS[kind]
        neuron = {"tau": self.tau, "alpha": self.alpha}
        self.patch = patch_class(dim, timesteps, pooling, name="patch", **neuron)
        self.blocks = [block_class(dim, heads, mlp_ratio, name=f"block{i}", **neuron) for i in range(depth)]
        self.head = SpikingClassifierHead(num_classes, spiking_head, name="head", **neuron)

    def call(self, inputs, training=None, record: Recorder | None = None):
        with scoped(record, self.patch.name):
            x = self.patch(inputs, training=training, record=record)
        for block in self.blocks:
            with scoped(record, block.name):
                x = block(x, training=training, record=record)
        with scoped(record, self.head.name):
            return self.head(x, training=training, record=record)

    def get_config(self):
        return {"kind": self.kind, "num_classes": self.num_classes, "depth": self.depth, "dim": self.dim,
                "heads": self.heads, "timesteps": self.timesteps, "mlp_ratio": self.mlp_ratio,
                "pooling": self.pooling, "tau": self.tau, "alpha": self.alpha, "name": self.name}

    def activity(self, images) -> tuple:
        """Logits and the recorded activity of one batch (inference mode): ``(logits, entries)``.

        Entries are :class:`~snn4vision.layers.Recorder` entries with the
        per-image tensors turned into numpy arrays.
        """
        record = Recorder()
        logits = self(images, training=False, record=record)
        entries = [{k: v.numpy() if isinstance(v, tf.Tensor) else v for k, v in e.items()} for e in record.entries]
        return logits.numpy(), entries


#: The per-image counts of a Recorder entry.
PER_IMAGE = ("spikes", "events", "accumulates")


def measure(model: SpikingTransformer, batches) -> dict:
    """Logits and mean activity per image over a dataset of ``(images, labels)`` batches.

    Returns ``{"logits": (n, classes), "layers": [entry, ...]}`` with each
    entry's per-image arrays averaged over the images (``spikes``, ``events``,
    ``accumulates``) and, for neuron layers, ``rate``: spikes per neuron per
    timestep.
    """
    logits, totals, count = [], None, 0
    for images, _ in batches:
        batch_logits, entries = model.activity(images)
        logits.append(batch_logits)
        count += len(batch_logits)
        if totals is None:  # the per-image fields this entry has (the analog stem has no events)
            totals = [dict(e) | {k: 0.0 for k in PER_IMAGE if e.get(k) is not None} for e in entries]
        for total, entry in zip(totals, entries):
            for key in PER_IMAGE:
                if entry.get(key) is not None:
                    total[key] += float(np.sum(entry[key]))
    for total in totals:
        for key in PER_IMAGE:
            if total.get(key) is not None:
                total[key] /= count
        if total["kind"] == "neurons":
            total["rate"] = total["spikes"] / (total["neurons"] * model.timesteps)
    return {"logits": np.concatenate(logits), "layers": totals}


def firing_rates(layers: list) -> dict:
    """``{layer name: spikes per neuron per timestep}`` of the neuron layers of :func:`measure`'s entries."""
    return {e["name"]: e["rate"] for e in layers if e["kind"] == "neurons"}


def total_spikes(layers: list):
    """Spikes of all neuron layers together, from :func:`measure`'s or :meth:`SpikingTransformer.activity`'s entries."""
    return sum(e["spikes"] for e in layers if e["kind"] == "neurons")

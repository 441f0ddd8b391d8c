"""The layer graph: its :class:`Node` s and the :class:`LayerGraph` that holds them, and graph specs."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ops import op_of

ONE = "1"  # the scale of the image and of the logits


@dataclass
class Node:
    """One node of the graph. ``shape``: its output without the batch axis; ``params``: JSON-able settings;
    ``kernel``/``bias``: the folded weights of a linear node (ANN units, gains not applied)."""

    name: str
    op: str
    inputs: list
    shape: tuple
    params: dict = field(default_factory=dict)
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None

    def spec(self) -> dict:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "shape": list(self.shape),
                "params": self.params}


@dataclass
class LayerGraph:
    """A converted network: nodes in topological order (the first is the input), the output node's name,
    a gain per neuron node (Hz per unit of ANN activation; 1 until :func:`normalise`), and the QCFS levels
    L of a QCFS network (None: ReLU): the fewest of its layers', each neuron node holding its own in
    ``params["levels"]`` (a requantised pooling, ``models.vgg16(pool_levels=...)``, may have more)."""

    nodes: list
    output: str
    gains: dict = field(default_factory=dict)
    levels: int | None = None

    def __post_init__(self):
        self.gains = {n.name: float(self.gains.get(n.name, 1.0)) for n in self.neurons}

    @property
    def neurons(self) -> list:
        return [n for n in self.nodes if n.op == "neuron"]

    @property
    def linear(self) -> list:
        return [n for n in self.nodes if op_of(n).linear]

    @property
    def thresholds(self) -> list | None:
        """QCFS thresholds (lambda) per neuron node; None for a ReLU network."""
        return None if self.levels is None else [n.params["threshold"] for n in self.neurons]

    @property
    def image_shape(self) -> tuple:
        return tuple(self.nodes[0].shape)

    def spec(self) -> dict:
        return {"nodes": [n.spec() for n in self.nodes], "output": self.output}


def nodes_from_spec(spec: dict) -> list:
    """The weightless nodes of a :meth:`LayerGraph.spec`."""
    return [Node(n["name"], n["op"], list(n["inputs"]), tuple(n["shape"]), dict(n["params"])) for n in spec["nodes"]]


def vgg_graph_spec(channels, pool_after, num_classes: int, image_size: int) -> dict:
    """The graph of the SNN4Space VGG-16 pattern (3x3 'same' convs, ReLU, 2x2 average pooling, GAP, bias-free
    logits), as the VGG simulator before the layer graph described it (``channels``, ``pool_after``)."""
    nodes, size, previous = [{"name": "input", "op": "input", "inputs": [], "shape": [image_size, image_size, 3],
                              "params": {}}], image_size, "input"
    for i, (c, pool) in enumerate(zip(channels, pool_after)):
        nodes.append({"name": f"conv{i}", "op": "conv", "inputs": [previous], "shape": [size, size, c],
                      "params": {"kernel_size": [3, 3], "strides": [1, 1], "padding": "SAME", "bias": True}})
        nodes.append({"name": f"relu{i}", "op": "neuron", "inputs": [f"conv{i}"], "shape": [size, size, c],
                      "params": {"threshold": None}})
        previous = f"relu{i}"
        if pool:
            size //= 2
            nodes.append({"name": f"pool{i}", "op": "avg_pool", "inputs": [previous], "shape": [size, size, c],
                          "params": {"pool_size": [2, 2], "strides": [2, 2], "padding": "VALID"}})
            previous = f"pool{i}"
    nodes.append({"name": "gap", "op": "gap", "inputs": [previous], "shape": [channels[-1]], "params": {}})
    nodes.append({"name": "logits", "op": "dense", "inputs": ["gap"], "shape": [num_classes],
                  "params": {"bias": False}})
    return {"nodes": nodes, "output": "logits"}

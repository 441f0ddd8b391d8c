"""Rate normalisation: the gain of every node (:func:`scale_plan`), rescaled weights and inputs, running a graph
with rate neurons (:func:`rate_forward`) and :func:`normalise`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..ops import op_of
from .graph import ONE, LayerGraph, Node

# --------------------------------------------------------------------------
# Gains: which factor each node's weights and inputs take
# --------------------------------------------------------------------------
@dataclass
class NodeScale:
    """How gains act on one node. Scales are names: ``ONE`` or a neuron node's name (its gain).

    ``inputs``: the scale of each input as produced; ``output``: the scale the node produces; a linear node's
    kernel is multiplied by ``output / inputs[0]`` and its bias by ``output``; any other node whose input
    scale differs from what it needs (a neuron: its own gain; an add or concat: its output) rescales that
    input by the ratio.
    """

    inputs: list
    output: str


def scale_plan(nodes: list, output: str) -> dict:
    """``{node name: NodeScale}``: where gains are applied, chosen so that no rescaling is needed in a chain
    (a VGG-16) and only the branches that meet at an add are rescaled otherwise."""
    consumers = {n.name: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            consumers[i].append(n)
    wanted = {}  # the scale a node's consumers would like it to produce (None: no preference)

    def wanted_input(node):
        if node.op == "neuron":
            return node.name
        return None if op_of(node).linear else wanted[node.name]

    for node in reversed(nodes):
        if node.name == output:
            wanted[node.name] = ONE
            continue
        asks = {wanted_input(c) for c in consumers[node.name]}
        wanted[node.name] = asks.pop() if len(asks) == 1 else None
    plan = {}
    for node in nodes:
        ins = [plan[i].output for i in node.inputs]
        if node.op == "input":
            out = ONE
        elif node.op == "neuron":
            out = node.name
        elif op_of(node).linear or op_of(node).meets:
            out = wanted[node.name] or ins[0]
        else:
            out = ins[0]
        plan[node.name] = NodeScale(ins, out)
    return plan


def rescale(x, have: str, need: str, gains: dict):
    """``x`` produced at scale ``have``, brought to scale ``need`` (no operation when they are the same)."""
    if have == need:
        return x
    if have == ONE:
        return x * gains[need]
    if need == ONE:
        return x / gains[have]
    return x * (gains[need] / gains[have])


def scaled_weights(scale: NodeScale, kernel, bias, gains: dict):
    """The kernel and bias of a linear node with gains applied: ``kernel * out / in``, ``bias * out``."""
    have, need = scale.inputs[0], scale.output
    if need == ONE:
        return (kernel if have == ONE else kernel / gains[have]), bias
    factor = gains[need] if have == ONE else gains[need] / gains[have]
    return kernel * factor, None if bias is None else bias * gains[need]


# --------------------------------------------------------------------------
# Running a graph
# --------------------------------------------------------------------------
def apply_op(node: Node, xs: list, kernel=None, bias=None):
    """Output of a non-neuron ``node`` for inputs ``xs`` (batched tensors); the kernel and bias of a linear node
    as given (gains already applied). The op's ``forward`` (:mod:`snn4vision.ops`)."""
    return op_of(node).forward(node, xs, kernel, bias)


def rate_forward(graph: LayerGraph, images, return_activations: bool = False):
    """Run the graph with rate neurons (ReLU, or QCFS for a QCFS network), gains applied: the ANN's logits.

    ``images``: ``(batch, h, w, c)``. Returns logits ``(batch, classes)`` and optionally
    ``{neuron node: output (at its gain)}``.
    """
    plan = scale_plan(graph.nodes, graph.output)
    gains = {name: np.float32(g) for name, g in graph.gains.items()}
    values, activations = {"input": tf.convert_to_tensor(images, tf.float32)}, {}
    for node in graph.nodes[1:]:
        scale = plan[node.name]
        xs = [values[i] for i in node.inputs]
        op = op_of(node)
        if node.op == "neuron":  # its input current is its producer's value at the neuron's own gain
            out = op.forward(node, [rescale(xs[0], scale.inputs[0], node.name, gains)])
            activations[node.name] = out
        elif op.linear:
            bias = node.bias if node.params["bias"] else None
            out = op.forward(node, xs, *scaled_weights(scale, node.kernel, bias, gains))
        else:
            if op.meets:
                xs = [rescale(x, have, scale.output, gains) for x, have in zip(xs, scale.inputs)]
            out = op.forward(node, xs)
        values[node.name] = out
    logits = rescale(values[graph.output], plan[graph.output].output, ONE, gains)
    return (logits, activations) if return_activations else logits


def activation_percentiles(graph: LayerGraph, batches, percentile: float = 99.9, max_values: int = 2_000_000,
                           seed: int = 0) -> list:
    """Per neuron node, the ``percentile`` of its ReLU outputs over ``batches`` of images (gains 1).

    Each node contributes at most ``max_values`` values (a seeded random subsample), which keeps memory bounded
    on large layers.
    """
    rng = np.random.default_rng(seed)
    collected = {n.name: [] for n in graph.neurons}
    for images in batches:
        _, activations = rate_forward(graph, images, return_activations=True)
        for name, act in activations.items():
            collected[name].append(act.numpy().ravel())
    result = []
    for store in collected.values():
        values = np.concatenate(store)
        if values.size > max_values:
            values = values[rng.choice(values.size, max_values, replace=False)]
        result.append(float(max(np.percentile(values, percentile), 1e-6)))
    return result


def normalise(graph: LayerGraph, percentiles: list, max_rate: float) -> LayerGraph:
    """Gains that map activation ``percentiles[l]`` of neuron node ``l`` to ``max_rate`` Hz: ``g_l = max_rate / p_l``.

    The logits are unchanged (see :func:`scale_plan`). ``percentiles`` must be measured with all gains 1.
    """
    if len(percentiles) != len(graph.neurons):
        raise ValueError("one percentile per neuron node is needed")
    gains = {n.name: float(max_rate / p) for n, p in zip(graph.neurons, percentiles)}
    return dataclasses.replace(graph, gains=gains)

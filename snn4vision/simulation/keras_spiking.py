"""keras-spiking's naive equivalent of a converted network, the way SNN4Space builds one."""
from __future__ import annotations

import tensorflow as tf

from ..ops import op_of


def keras_spiking_model(model, timesteps: int | None = None):
    """The same network as ``model`` (a :class:`~snn4vision.simulation.SpikingNetwork`) built the SNN4Space way
    from keras-spiking layers.

    Input ``(batch, time, h, w, c)`` (the image repeated over time); output per-step logits
    ``(batch, time, classes)``. Every layer runs through ``TimeDistributed``; each neuron node is
    ``SpikingActivation("relu")`` seeded like ours, followed by ``Lowpass`` when ``model.tau`` is set. Weights
    are copied from ``model`` with its gains applied. Graphs whose gains need rescaling between nodes (a
    normalised residual add) and max pooling have no keras-spiking equivalent.
    """
    if model.neuron != "keras_spiking":
        raise ValueError("keras-spiking has no integrate-and-fire neuron with reset by subtraction: the naive "
                         "model exists for keras-spiking neurons only")
    weights = model.effective_weights()
    inputs = tf.keras.Input((timesteps, *model.nodes[0].shape))
    values = {"input": inputs}
    for node in model.nodes[1:]:
        scale = model.plan[node.name]
        if not op_of(node).linear and any(have != scale.inputs[0] for have in scale.inputs) or (
                node.op == "neuron" and scale.inputs[0] != node.name):
            raise ValueError(f"node {node.name} rescales its inputs: keras-spiking layers cannot")
        # each op builds its layers, with the model's weights, seeds and time constants (snn4vision.ops)
        values[node.name] = op_of(node).keras_spiking(node, model, [values[i] for i in node.inputs], weights)
    return tf.keras.Model(inputs, values[model.graph["output"]], name="keras_spiking_network")

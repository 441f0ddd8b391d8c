"""The layer graph of a Keras CNN (:mod:`~snn4vision.layer_graph.graph`), the converters that build it
(:mod:`~snn4vision.layer_graph.converters`), and its exact folding for conversion
(:mod:`~snn4vision.layer_graph.scaling`); every name is re-exported here.

:func:`build_graph` walks a functional or Sequential ``tf.keras.Model`` and
turns each layer into graph nodes through the :class:`LayerConverter`
registered for the layer's type (:func:`converts`). A converter declares the
layer arguments it does not support (``unsupported``); a layer without a
converter, or with such an argument, stops the conversion with one line that
names it. BatchNorm is folded exactly into the conv or dense layer before it,
Dropout is removed, and ReLU / ``Activation("relu")`` / QCFS become neuron
nodes.

Rate normalisation (:func:`normalise`) gives every neuron node a gain in Hz
per unit of ANN activation. Because ``relu(g * h) = g * relu(h)`` for
``g > 0``, a gain becomes a rescaling of the weights that feed the neuron
(:func:`scale_plan`); where tensors of different gains meet (a residual add)
the smaller branch is rescaled. The graph with rate neurons
(:func:`rate_forward`) reproduces the ANN's logits.

Max pooling has no exact spiking form. A ``MaxPooling2D`` is kept in the ANN
(rate forward: exact) and becomes a *rate-gated* max pooling in the SNN: in
each window, the unit with the most output so far passes its current output
(the approach of snntoolbox); it equals max pooling of the rates once the
rates have settled.
"""
from ..ops import LINEAR_OPS, OPS, SCALE_FREE_OPS, op_of  # the op names, kept here for their readers
from .graph import ONE, LayerGraph, Node, nodes_from_spec, vgg_graph_spec
from .converters import (CONVERTERS, ActivationConverter, AddConverter, AveragePoolingConverter, BatchNormConverter,
                         ConcatenateConverter, ConvConverter, DenseConverter, DepthwiseConverter,
                         GlobalAveragePoolingConverter, InferenceIdentityConverter, LayerConverter,
                         MaxPoolingConverter, QCFSConverter, ReLUConverter, ReshapeConverter, ZeroPaddingConverter,
                         build_graph, converts, unconvertible_layers)
from .scaling import (NodeScale, activation_percentiles, apply_op, normalise, rate_forward, rescale, scale_plan,
                      scaled_weights)

__all__ = [
    "CONVERTERS", "LINEAR_OPS", "ONE", "OPS", "SCALE_FREE_OPS", "ActivationConverter", "AddConverter",
    "AveragePoolingConverter", "BatchNormConverter", "ConcatenateConverter", "ConvConverter", "DenseConverter",
    "DepthwiseConverter", "GlobalAveragePoolingConverter", "InferenceIdentityConverter", "LayerConverter",
    "LayerGraph", "MaxPoolingConverter", "Node", "NodeScale", "QCFSConverter", "ReLUConverter",
    "ReshapeConverter", "ZeroPaddingConverter", "activation_percentiles", "apply_op", "build_graph", "converts",
    "nodes_from_spec", "normalise", "op_of", "rate_forward", "rescale", "scale_plan", "scaled_weights",
    "unconvertible_layers", "vgg_graph_spec",
]

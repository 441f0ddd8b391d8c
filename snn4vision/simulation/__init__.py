"""The spiking simulator of converted networks and keras-spiking's naive equivalent.

One module per concern, every public name re-exported here (``from snn4vision import simulation``):

- :mod:`~snn4vision.simulation.network`: :class:`SpikingNetwork`, a converted layer graph as a Keras model (its
  weights, thresholds and gains, how QCFS levels are compressed into T steps, its training losses, costs,
  evaluation and NIR export);
- :mod:`~snn4vision.simulation.stepping`: one run of it over time (:class:`~snn4vision.simulation.stepping.Run`:
  the state each node keeps between steps, the step, the outputs), and the read-out of per-step logits;
- :mod:`~snn4vision.simulation.keras_spiking`: the same network built from keras-spiking layers, the way
  SNN4Space does (:func:`keras_spiking_model`).
"""
from .keras_spiking import keras_spiking_model
from .network import IF_NEURONS, NEURONS, SpikingNetwork
from .stepping import outside_band, readout

__all__ = ["IF_NEURONS", "NEURONS", "SpikingNetwork", "keras_spiking_model", "outside_band", "readout"]

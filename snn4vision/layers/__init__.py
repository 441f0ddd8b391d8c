"""Custom Keras layers of snn4vision, one module per concern, every name re-exported here.

- :mod:`~snn4vision.layers.qcfs`: ``QCFS``, the quantisation-clip-floor-shift activation (Bu et al., ICLR 2022)
  for ANNs that convert to integrate-and-fire SNNs with (almost) no loss at small T;
- the directly trained spiking transformers, Spikformer (Zhou et al., ICLR 2023) and the Spike-driven
  Transformer (Yao et al., NeurIPS 2023), with the semantics of their reference code:
  :mod:`~snn4vision.layers.common` (the ``LIF`` layer, the activity ``Recorder``),
  :mod:`~snn4vision.layers.patches` (the patch-splitting stems) and :mod:`~snn4vision.layers.transformer`
  (attention, MLPs, blocks, the head).

Every layer is registered serializable under the package name ``snn4vision``, whichever module holds it.
"""
from .qcfs import QCFS, floor_straight_through, qcfs_formula, qcfs_trainable
from .common import ATTENTION_SCALE, LIF, Recorder, fold_time, max_pool_3x3, scoped, unfold_time
from .patches import SpikeDrivenPatchSplitting, SpikingPatchSplitting
from .transformer import (SpikeDrivenBlock, SpikeDrivenMLP, SpikeDrivenSelfAttention, SpikformerBlock,
                          SpikingClassifierHead, SpikingMLP, SpikingSelfAttention)

__all__ = [
    "ATTENTION_SCALE", "LIF", "QCFS", "Recorder", "SpikeDrivenBlock", "SpikeDrivenMLP",
    "SpikeDrivenPatchSplitting", "SpikeDrivenSelfAttention", "SpikformerBlock", "SpikingClassifierHead",
    "SpikingMLP", "SpikingPatchSplitting", "SpikingSelfAttention", "floor_straight_through", "fold_time",
    "max_pool_3x3", "qcfs_formula", "qcfs_trainable", "scoped", "unfold_time",
]

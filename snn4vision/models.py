"""Model builders: the SNN4Space VGG-16, ResNet-18 and ResNet-20 (ANNs to convert), and the spiking transformers.

SNN4Space (Kucik & Meoni, 2021) changes VGG-16 so that it converts to a
spiking network: average pooling instead of max pooling, no pooling after
the last block, global average pooling, and bias-free logits.
"""
from __future__ import annotations

import socket
from pathlib import Path

import tensorflow as tf

from .checkpoints import load_weights
from .errors import UserError
from .layers import QCFS
from .transformers import SpikingTransformer

#: Conv channels of VGG-16's five blocks; "P" is a 2x2 pooling.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
WEIGHTS_CHOICES = ("none", "imagenet")
ACTIVATIONS = ("relu", "qcfs")


def scaled_channels(channels: int, width: float) -> int:
    """Channels of a conv layer at a width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def vgg16(
    num_classes: int,
    image_size: int = 224,
    width: float = 1.0,
    batch_norm: bool = False,
    weights: str = "none",
    kernel_l2: float = 1e-4,
    bias_l1: float = 1e-5,
    seed: int | None = None,
    activation: str = "relu",
    levels: int = 8,
    qcfs_threshold: float = 2.0,
    pool_before_activation: bool = False,
    pool_levels: int = 0,
    channels: int = 3,
    pre_pool_levels: int = 0,
    layer_levels: dict | None = None,
):
    """Build the SNN4Space VGG-16 as a functional ``tf.keras.Model``.

    Input ``(batch, image_size, image_size, channels)`` float images in ``[0, 1]`` (3: RGB; more or fewer for
    the bands of a multispectral run); output ``(batch, num_classes)`` logits. Layer names follow Keras' VGG16
    (``block{b}_conv{i}``), with ``block{b}_bn{i}`` (optional BatchNorm
    before the ReLU), ``block{b}_relu{i}`` and ``block{b}_pool``, then
    ``gap`` and ``logits``.

    ``weights``: ``"none"``, ``"imagenet"`` (Keras' VGG-16 conv weights,
    width 1.0 only, needs internet) or the path of an ``.h5`` weights file
    of this same architecture.

    ``activation``: ``"relu"``, or ``"qcfs"`` for the QCFS activation with
    ``levels`` quantisation levels (layers ``block{b}_qcfs{i}``) and initial
    threshold ``qcfs_threshold``, which converts to integrate-and-fire
    neurons almost losslessly at T = levels.

    ``pool_before_activation``: each block's last conv is pooled before its activation (conv, BatchNorm,
    pooling, activation) instead of after it. The ANN computes the same MACs, but the converted SNN has 4x
    fewer neurons there, and the next block's first layer receives the spikes of a pooled map: about 4x fewer
    synaptic operations in the four layers that read a pooled map.

    ``pool_levels`` (QCFS, pooling after the activations): a QCFS activation with this many levels follows each
    block's pooling (``block{b}_pool_qcfs``; 0: none). The average of four neurons' L + 1 levels takes 4L + 1
    values; at ``2 L`` levels the pooled map keeps most of them, and in the SNN the next block's first layer
    receives the spikes of a quarter as many neurons: about half as many spikes as the four would send.

    ``pre_pool_levels`` (with ``pool_levels``): the levels of each pooled block's last activation
    (``block{b}_qcfs{i}`` before ``block{b}_pool``; 0: ``levels``). Those neurons' spikes reach only the
    pooling, one synaptic operation each, so more levels there cost few operations, while the average that the
    requantisation reads loses less.

    ``layer_levels`` (QCFS): ``{layer name: L}``, the levels of the QCFS layers it names, over ``levels``,
    ``pre_pool_levels`` and ``pool_levels`` (for example more levels where quantising costs most accuracy, and
    fewer where spikes are dear: :func:`snn4vision.quantisation.quantisation_sensitivity` measures both).
    """

    layers = tf.keras.layers
    regularizers = tf.keras.regularizers
    if num_classes < 2:
        raise UserError(f"need at least 2 classes, got {num_classes}")
    if image_size < 16:
        raise UserError(f"--image-size must be at least 16 (four 2x2 poolings), got {image_size}")
    if width <= 0:
        raise UserError(f"--width must be positive, got {width}")
    if activation not in ACTIVATIONS:
        raise UserError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if levels < 1:
        raise UserError(f"--levels must be at least 1, got {levels}")
    if pool_levels and (activation != "qcfs" or pool_before_activation):
        raise UserError("--pool-levels requantises a pooled map of QCFS activations: it needs --activation qcfs "
                        "and pooling after the activations (drop --pool-before-activation)")
    if pre_pool_levels and not pool_levels:
        raise UserError("--pre-pool-levels sets the levels of the activations that a requantised pooling reads: it "
                        "needs --pool-levels")
    _check_channels(channels, weights)
    levels_of = _LayerLevels(layer_levels, activation)
    initializer_seed = iter(range(10**6)) if seed is None else iter(range(seed * 1000, seed * 1000 + 1000))

    def kernel_init():
        return tf.keras.initializers.GlorotUniform(seed=None if seed is None else next(initializer_seed))

    inputs = tf.keras.Input((image_size, image_size, channels), name="image")
    x = inputs
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        for i, channels in enumerate(block, start=1):
            x = layers.Conv2D(
                scaled_channels(channels, width), 3, padding="same", name=f"block{b}_conv{i}",
                kernel_initializer=kernel_init(),
                kernel_regularizer=regularizers.L2(kernel_l2) if kernel_l2 else None,
                bias_regularizer=regularizers.L1(bias_l1) if bias_l1 else None,
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=0.9, name=f"block{b}_bn{i}")(x)
            pooled = b < len(VGG16_BLOCKS) and i == len(block)
            if pooled and pool_before_activation:
                x = layers.AveragePooling2D(2, name=f"block{b}_pool")(x)
            if activation == "qcfs":
                steps = pre_pool_levels if pooled and pre_pool_levels else levels
                x = QCFS(levels_of(f"block{b}_qcfs{i}", steps), qcfs_threshold, name=f"block{b}_qcfs{i}")(x)
            else:
                x = layers.ReLU(name=f"block{b}_relu{i}")(x)
            if pooled and not pool_before_activation:
                x = layers.AveragePooling2D(2, name=f"block{b}_pool")(x)
                if pool_levels:
                    x = QCFS(levels_of(f"block{b}_pool_qcfs", pool_levels), qcfs_threshold,
                             name=f"block{b}_pool_qcfs")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, use_bias=False, name="logits", kernel_initializer=kernel_init(),
                           kernel_regularizer=regularizers.L2(kernel_l2) if kernel_l2 else None)(x)
    model = tf.keras.Model(inputs, outputs, name="vgg16_snn4space")
    levels_of.check(model)
    load_initial_weights(model, weights, width)
    return model


#: Residual stages of the ResNets: (channels, blocks, stride of the stage's first block).
RESNET_STAGES = {
    "resnet18": ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)),
    "resnet20": ((16, 3, 1), (32, 3, 2), (64, 3, 2)),
}


def resnet(depth: str, num_classes: int, image_size: int = 64, width: float = 1.0, weights: str = "none",
           kernel_l2: float = 1e-4, bias_l1: float = 1e-5, seed: int | None = None, activation: str = "relu",
           levels: int = 8, qcfs_threshold: float = 2.0, channels: int = 3, layer_levels: dict | None = None):
    """ResNet-18 or the CIFAR ResNet-20 (``depth`` "resnet18" or "resnet20") as a functional ``tf.keras.Model``.

    Input ``(batch, image_size, image_size, channels)`` images in ``[0, 1]`` (3: RGB; the selected bands of a
    multispectral run); output ``(batch, num_classes)`` logits. Both start with a 3x3 stride-1 conv (ResNet-18's ImageNet stem, a 7x7 stride-2 conv and a max pooling,
    would leave 2x2 maps of a 64 px image) and end with global average pooling and a dense layer. Basic
    blocks, post-activation: ``act(BN(conv(act(BN(conv(x))))) + shortcut(x))``; the shortcut is the identity,
    or a 1x1 strided conv with BatchNorm where the shape changes. Layers are named
    ``stage{s}_block{b}_{conv1,bn1,act1,conv2,bn2,add,act2}`` (``..._proj``, ``..._proj_bn`` for shortcuts).
    ``width`` scales every channel count; ``activation`` "qcfs" puts QCFS with ``levels`` levels at every
    activation, which converts to integrate-and-fire neurons almost losslessly at T = levels;
    ``layer_levels`` ``{layer name: L}`` gives the QCFS layers it names other levels, as in :func:`vgg16`.
    """

    layers = tf.keras.layers
    if depth not in RESNET_STAGES:
        raise UserError(f"unknown ResNet {depth!r}: use one of {', '.join(RESNET_STAGES)}")
    if num_classes < 2:
        raise UserError(f"need at least 2 classes, got {num_classes}")
    stride = 2 ** sum(1 for _, _, s in RESNET_STAGES[depth] if s == 2)
    if image_size < stride:
        raise UserError(f"--image-size must be at least {stride} for {depth}, got {image_size}")
    if width <= 0:
        raise UserError(f"--width must be positive, got {width}")
    if activation not in ACTIVATIONS:
        raise UserError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if weights == "imagenet":
        raise UserError(f"--weights imagenet exists for the VGG-16 only: train {depth} from scratch "
                        "(--weights none) or give an .h5 file of this architecture")
    _check_channels(channels, weights)
    levels_of = _LayerLevels(layer_levels, activation)
    seeds = iter(range(10**6)) if seed is None else iter(range(seed * 1000, seed * 1000 + 1000))

    def next_seed():
        return None if seed is None else next(seeds)

    def conv(x, channels, kernel, strides, name):
        return layers.Conv2D(channels, kernel, strides, padding="same", use_bias=False, name=name,
                             kernel_initializer=tf.keras.initializers.HeNormal(seed=next_seed()),
                             kernel_regularizer=tf.keras.regularizers.L2(kernel_l2) if kernel_l2 else None)(x)

    def act(x, name):
        if activation == "qcfs":
            return QCFS(levels_of(name, levels), qcfs_threshold, name=name)(x)
        return layers.ReLU(name=name)(x)

    def norm(x, name):
        return layers.BatchNormalization(momentum=0.9, name=name)(x)

    inputs = tf.keras.Input((image_size, image_size, channels), name="image")
    x = act(norm(conv(inputs, scaled_channels(RESNET_STAGES[depth][0][0], width), 3, 1, "stem_conv"), "stem_bn"),
            "stem_act")
    for s, (channels, blocks, first_stride) in enumerate(RESNET_STAGES[depth], start=1):
        channels = scaled_channels(channels, width)
        for b in range(1, blocks + 1):
            name, strides = f"stage{s}_block{b}", first_stride if b == 1 else 1
            y = act(norm(conv(x, channels, 3, strides, f"{name}_conv1"), f"{name}_bn1"), f"{name}_act1")
            y = norm(conv(y, channels, 3, 1, f"{name}_conv2"), f"{name}_bn2")
            if strides != 1 or x.shape[-1] != channels:
                x = norm(conv(x, channels, 1, strides, f"{name}_proj"), f"{name}_proj_bn")
            x = act(layers.Add(name=f"{name}_add")([x, y]), f"{name}_act2")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits",
                           kernel_initializer=tf.keras.initializers.GlorotUniform(seed=next_seed()),
                           kernel_regularizer=tf.keras.regularizers.L2(kernel_l2) if kernel_l2 else None,
                           bias_regularizer=tf.keras.regularizers.L1(bias_l1) if bias_l1 else None)(x)
    model = tf.keras.Model(inputs, outputs, name=depth)
    levels_of.check(model)
    load_initial_weights(model, weights, width)
    return model


class _LayerLevels:
    """The levels of each QCFS layer a builder makes: ``layer_levels[name]`` where given, else the builder's;
    :meth:`check` then refuses names that matched no QCFS layer (a typo would otherwise train the default)."""

    def __init__(self, layer_levels: dict | None, activation: str):
        self.given = dict(layer_levels or {})
        if self.given and activation != "qcfs":
            raise UserError("--layer-levels sets the levels of QCFS layers: it needs --activation qcfs")
        for name, value in self.given.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"--layer-levels {name}={value}: the levels must be a whole number of at least 1")

    def __call__(self, name: str, default: int) -> int:
        return self.given.get(name, default)

    def check(self, model) -> None:
        qcfs = [layer.name for layer in model.layers if isinstance(layer, QCFS)]
        unknown = [name for name in self.given if name not in qcfs]
        if unknown:
            raise UserError(f"--layer-levels names {', '.join(unknown)}, not a QCFS layer of this network: "
                            f"choose among {', '.join(qcfs)}")


def _check_channels(channels: int, weights: str) -> None:
    if int(channels) < 1:
        raise UserError(f"the first convolution needs at least 1 input channel, got {channels}")
    if weights == "imagenet" and channels != 3:
        raise UserError(f"--weights imagenet holds RGB filters, but the run's images have {channels} band(s): train "
                        "from scratch (--weights none), or select 3 bands with --bands")


def vgg16_layout(width: float) -> tuple[list, list]:
    """``(channels, pool_after)`` of the VGG-16's 13 conv layers at ``width``: a 2x2 pooling follows the last
    conv of blocks 1 to 4."""
    channels, pool_after = [], []
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        channels += [scaled_channels(c, width) for c in block]
        pool_after += [i == len(block) and b < len(VGG16_BLOCKS) for i in range(1, len(block) + 1)]
    return channels, pool_after


def conv_layers(model) -> list:
    """The Conv2D layers of a model, in order."""

    return [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)]


def load_initial_weights(model, weights: str, width: float) -> None:
    """Apply ``--weights`` (none, imagenet or a file path) to a fresh VGG-16."""

    if weights in (None, "", "none"):
        return
    if weights == "imagenet":
        _load_imagenet(model, width)
        return
    load_weights(model, Path(weights), what="--weights")


def _load_imagenet(model, width: float) -> None:

    if width != 1.0:
        raise UserError("--weights imagenet needs --width 1.0 (the pretrained VGG-16 has full width)")
    cache = Path.home() / ".keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if not cache.exists():
        try:
            socket.create_connection(("storage.googleapis.com", 443), timeout=3).close()
        except OSError:
            raise UserError(
                "--weights imagenet needs to download Keras' VGG-16 weights, but storage.googleapis.com is "
                f"unreachable: copy vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 to {cache.parent}, "
                "pass --weights PATH to an .h5 file, or use --weights none"
            ) from None
    reference = tf.keras.applications.VGG16(include_top=False, weights="imagenet")
    for layer in conv_layers(reference):
        kernel, bias = layer.get_weights()
        if layer.name == "block1_conv1":
            kernel, bias = _absorb_caffe_preprocessing(kernel, bias)
        model.get_layer(layer.name).set_weights([kernel, bias])


#: Keras' VGG-16 expects "caffe" input: BGR, 0-255, minus these means (BGR).
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _absorb_caffe_preprocessing(kernel, bias):
    """Fold caffe preprocessing into the first conv, so the model takes RGB in [0, 1].

    conv(W, 255 x_bgr - m) = conv(255 W_rgb, x) - sum(W * m): exact except in
    the zero-padded border, where the mean would have been subtracted from 0.
    """
    import numpy as np

    bias = bias - np.einsum("hwco,c->o", kernel, np.asarray(_CAFFE_MEAN_BGR, kernel.dtype))
    return 255.0 * kernel[:, :, ::-1, :], bias


def spikformer(num_classes: int, depth: int = 4, dim: int = 384, heads: int = 12, timesteps: int = 4,
               image_size: int | None = 32, mlp_ratio: int = 4, pooling: str = "0011", tau: float = 2.0,
               alpha: float = 4.0, channels: int = 3):
    """Spikformer (official CIFAR configuration by default: 4 blocks, dim 384, 12 heads, T = 4).

    Returns a :class:`~snn4vision.transformers.SpikingTransformer`, built for
    ``(batch, image_size, image_size, channels)`` input when ``image_size`` is given.
    """
    return _spiking_transformer("spikformer", num_classes, depth, dim, heads, timesteps, image_size, mlp_ratio,
                                pooling, tau, alpha, channels)


def spike_driven_transformer(num_classes: int, depth: int = 2, dim: int = 512, heads: int = 8, timesteps: int = 4,
                             image_size: int | None = 32, mlp_ratio: int = 4, pooling: str = "0011",
                             tau: float = 2.0, alpha: float = 4.0, channels: int = 3):
    """The Spike-driven Transformer (official CIFAR configuration by default: 2 blocks, dim 512, 8 heads, T = 4).

    Returns a :class:`~snn4vision.transformers.SpikingTransformer`, built for
    ``(batch, image_size, image_size, channels)`` input when ``image_size`` is given.
    """
    return _spiking_transformer("sdt", num_classes, depth, dim, heads, timesteps, image_size, mlp_ratio, pooling,
                                tau, alpha, channels)


def _spiking_transformer(kind, num_classes, depth, dim, heads, timesteps, image_size, mlp_ratio, pooling, tau, alpha,
                         channels=3):
    _check_channels(channels, "none")

    try:
        model = SpikingTransformer(kind, num_classes, depth, dim, heads, timesteps, mlp_ratio, pooling, tau, alpha)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if image_size is not None:
        pools = pooling.count("1")
        if image_size < 2 ** pools:
            raise UserError(f"--image-size {image_size} is too small for {pools} poolings")
        model(tf.zeros((1, image_size, image_size, channels)))  # the patch splitting's first conv takes C channels
    return model

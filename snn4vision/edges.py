"""Edge-filter inputs: SNN4Space's Prewitt and Sobel input transforms.

An :class:`EdgeFilter` maps a batch of images ``(batch, h, w, c)`` in
``[0, 1]`` to another of the same shape, channel by channel (c is 3 for RGB,
or the selected bands of a multispectral run: each band is filtered alone):

1. the gradient magnitude ``sqrt(gx^2 + gy^2)`` of the 3x3 Prewitt or Sobel
   kernels, divided by ``sqrt(10)`` (Prewitt) or ``sqrt(20)`` (Sobel), as
   SNN4Space does, so that it stays below about 1.3;
2. with ``squared``, that magnitude squared (SNN4Space's ``sq``);
3. values below ``2 / 255`` set to 0;
4. with ``mask``, the original pixels where the edge map is nonzero, 0
   elsewhere.

The border rule is reflection about the edge (``d c b a | a b c d``, SciPy's
``mode="reflect"``): a pixel beyond the border takes the value of its
mirror image, so a flat image has no edges at its border. SNN4Space pads
with zeros instead (tensorflow-io's default), which draws a bright frame
round every image.

Names follow SNN4Space's dataset grammar: ``"prewitt"``, ``"sobel_sq"``,
``"prewitt_sq_mask"``; ``"none"`` is no transform. :func:`split_dataset_name`
reads a whole SNN4Space dataset name such as ``ucm_prewitt_sq_mask``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UserError

#: Edge kernels as correlation weights (rows: y, columns: x) and the divisor of their magnitude.
KERNELS = {
    "prewitt": (np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float32), float(np.sqrt(10.0))),
    "sobel": (np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32), float(np.sqrt(20.0))),
}
#: Edge values below this are set to 0 (two grey levels of an 8-bit image).
SMALL = 2.0 / 255.0
#: SNN4Space's dataset names and ours.
DATASET_NAMES = {"ucm": "uc_merced", "uc_merced": "uc_merced", "eurosat": "eurosat"}


@dataclass(frozen=True)
class EdgeFilter:
    """One edge transform: ``kind`` "prewitt" or "sobel", ``squared``, ``mask`` (see the module docstring)."""

    kind: str
    squared: bool = False
    mask: bool = False

    @property
    def name(self) -> str:
        return "_".join([self.kind] + ["sq"] * self.squared + ["mask"] * self.mask)

    def __call__(self, images):
        """``images`` ``(batch, h, w, c)`` float in ``[0, 1]`` -> the transformed batch, same shape."""
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        kernel, divisor = KERNELS[self.kind]
        channels = tf.shape(images)[-1]
        # depthwise: the same 3x3 kernel on every channel; filters (3, 3, channels, 1)
        gx = tf.tile(tf.constant(kernel)[:, :, None, None], tf.stack([1, 1, channels, 1]))
        gy = tf.tile(tf.constant(kernel.T)[:, :, None, None], tf.stack([1, 1, channels, 1]))
        padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        x = tf.nn.depthwise_conv2d(padded, gx, [1, 1, 1, 1], "VALID")
        y = tf.nn.depthwise_conv2d(padded, gy, [1, 1, 1, 1], "VALID")
        edges = tf.sqrt(x * x + y * y) / divisor
        if self.squared:
            edges = edges * edges
        edges = tf.where(edges >= SMALL, edges, 0.0)
        if self.mask:
            return tf.where(edges > 0.0, images, 0.0)
        return edges


def parse(name: str | None) -> EdgeFilter | None:
    """The transform called ``name`` ("prewitt", "sobel_sq_mask", ...); None for "none" or None."""
    if name in (None, "", "none"):
        return None
    kind, *flags = name.split("_")
    if kind not in KERNELS or len(set(flags)) != len(flags) or not set(flags) <= {"sq", "mask"}:
        raise UserError(f"unknown input transform {name!r}: use none, prewitt or sobel, optionally followed by "
                        "_sq and/or _mask (for example prewitt_sq_mask)")
    return EdgeFilter(kind, squared="sq" in flags, mask="mask" in flags)


def transform_name(kind: str | None, squared: bool = False, mask: bool = False) -> str:
    """The name of ``--input-transform KIND [--squared] [--mask]``; "none" without a kind."""
    if kind in (None, "none"):
        if squared or mask:
            raise UserError("--squared and --mask modify an edge filter: add --input-transform prewitt or sobel")
        return "none"
    if kind not in KERNELS:
        raise UserError(f"--input-transform must be none, prewitt or sobel, got {kind!r}")
    return EdgeFilter(kind, squared, mask).name


def split_dataset_name(dataset: str) -> tuple[str, str]:
    """``"ucm_prewitt_sq_mask"`` -> ``("uc_merced", "prewitt_sq_mask")``; other names -> ``(dataset, "none")``.

    Only TFDS names take the suffixes (a folder path is returned as it is).
    """
    if dataset in DATASET_NAMES:
        return DATASET_NAMES[dataset], "none"
    for prefix, tfds_name in sorted(DATASET_NAMES.items(), key=lambda item: -len(item[0])):
        if dataset.startswith(prefix + "_") and dataset[len(prefix) + 1:].split("_")[0] in KERNELS:
            transform = dataset[len(prefix) + 1:]
            parse(transform)  # refuses unknown flags in one line
            return tfds_name, transform
    return dataset, "none"

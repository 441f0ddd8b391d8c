"""Decoding images into cached ``tf.data`` datasets of ``uint8`` squares (:func:`decoded_dataset`), TIFFs
included, and one line naming a file TensorFlow cannot decode."""
from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import bands
from ..errors import UserError
from .sources import ImageSource, check_images

# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------
def decode_image(data):
    """Decode JPEG/PNG/BMP/GIF or TIFF bytes into ``uint8 (h, w, 3)``.

    TIFFs are recognised by their magic bytes and decoded with
    tensorflow-io, which returns RGBA with the colours multiplied by alpha
    (transparent pixels become black); alpha is then dropped. Only RGB and
    RGB-plus-alpha TIFFs get here (:func:`check_images` refuses others).
    """
    import tensorflow as tf

    head = tf.strings.substr(data, 0, 4)
    is_tiff = tf.logical_or(tf.equal(head, b"II*\x00"), tf.equal(head, b"MM\x00*"))

    def tiff():
        import tensorflow_io as tfio

        return tfio.experimental.image.decode_tiff(data)[..., :3]

    def other():
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    image = tf.cond(is_tiff, tiff, other)
    image.set_shape([None, None, 3])
    return image


def resize_uint8(image, image_size: int):
    """Resize to ``(image_size, image_size)`` (bilinear, antialiased) as uint8."""
    import tensorflow as tf

    resized = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def load_image_file(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """Read one image file as ``uint8 (h, w, 3)``, resized if ``image_size``.

    Raises a UserError naming the file if it cannot be read or decoded.
    """
    import tensorflow as tf

    if not Path(path).is_file():
        raise UserError(f"image file {path} does not exist")
    layout = check_images([Path(path)])
    if layout is not None:
        raise UserError(f"image {path} has {layout.describe()}, where an RGB image was expected (this run was "
                        "trained on RGB images): give an RGB image, or train a run on the multi-band images")
    try:
        with _c_libraries_quiet():
            image = decode_image(tf.io.read_file(str(path)))
            if image_size:
                image = resize_uint8(image, image_size)
            return image.numpy()
    except (tf.errors.OpError, ValueError) as exc:
        raise UserError(f"cannot read image {path} ({tf_error_text(exc)}): replace or remove the file") from None


@contextlib.contextmanager
def _c_libraries_quiet() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: libjpeg and libtiff print their own lines before TensorFlow raises,
    and the error raised is the one line the user should see."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tf_error_text(exc: Exception, limit: int = 160) -> str:
    """The first line of a TensorFlow error without its ``{{function_node ...}}`` and ``[Op:...]`` decorations."""
    text = str(getattr(exc, "message", None) or exc).strip()
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text.splitlines()[0] if text else "")
    text = re.sub(r"\s*\[\[\{\{node [^]]*\]\]|\s*\[Op:[^\]]*\]?|\s*name:.*$", "", text).strip()
    return (text or type(exc).__name__)[:limit]


def decoded_dataset(source: ImageSource, indices: np.ndarray, image_size: int):
    """``tf.data`` of ``(uint8 image (s, s, 3), int64 label)`` for ``indices``, cached."""
    import tensorflow as tf

    if source.kind == "events":  # an events.EventSource: float16 frames binned as the run says
        return source.decoded(indices, image_size)
    if source.layout is not None:  # multi-band: float16 images of the selected, normalised bands
        return bands.decoded_dataset(source, indices, image_size)
    autotune = tf.data.AUTOTUNE
    labels = source.labels[indices]
    if source.kind == "folder":
        paths = [str(source.root / source.items[i]) for i in indices]
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        ds = ds.map(lambda p, y: (resize_uint8(decode_image(tf.io.read_file(p)), image_size), y),
                    num_parallel_calls=autotune, deterministic=True)
    else:
        wanted = tf.constant(np.asarray(indices, np.int64))
        ds = source._tfds_dataset.enumerate().filter(lambda i, e: tf.reduce_any(tf.equal(i, wanted)))
        ds = ds.map(lambda i, e: (resize_uint8(e["image"], image_size), e["label"]), num_parallel_calls=autotune)
    return ds.cache()


@contextlib.contextmanager
def explain_bad_images(source: ImageSource, indices: np.ndarray) -> Iterator[None]:
    """Turn a decoding failure deep inside ``tf.data`` into a UserError naming the file.

    TensorFlow's decode errors do not say which file failed; on such an error
    the files of ``indices`` are decoded one by one to find it.
    """
    import tensorflow as tf

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError) as exc:
        if source.kind == "folder":
            for i in indices:
                if source.layout is not None:
                    bands.read_bands(source.root / source.items[i], source.layout)
                else:
                    load_image_file(source.root / source.items[i])
            if "decode" not in str(exc).lower():  # every file decodes: the error was not about the images
                raise
        raise UserError(f"an image of {source.name} could not be decoded ({tf_error_text(exc)}): find it by "
                        "opening the images one by one, then replace or remove it") from None



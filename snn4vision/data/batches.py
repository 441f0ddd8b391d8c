"""Augmentation (:class:`Augmentation`, :data:`AUGMENTATIONS`) and the training and evaluation batches a
model takes (:func:`training_batches`, :func:`evaluation_batches`)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserError
from ..edges import EdgeFilter

# --------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Augmentation:
    """SNN4Space's training augmentation, applied per image with stateless ops.

    Input and output: ``float32 (h, w, c)`` in ``[0, 1]`` (hue and saturation only where c is 3); ``seed`` is an
    ``int64 (2,)`` tensor, so the result is a pure function of image and seed.
    Set a parameter to ``None`` (or ``False``) to switch that step off.
    """

    # random resized crop (Inception's crop, as torchvision's RandomResizedCrop): a box of a fraction drawn from
    # crop_area of the image's area and an aspect ratio drawn from crop_aspect, resized back to the image's size
    crop_area: tuple | None = None
    crop_aspect: tuple = (3 / 4, 4 / 3)
    zoom: tuple | None = (0.95, 1.05)
    pad_crop: float | None = 0.0625  # pad by this fraction of the size, then crop back at random
    flips: bool = True
    rotations: bool = True  # multiples of 90 degrees
    brightness: float | None = 0.2
    contrast: tuple | None = (0.2, 1.8)
    hue: float | None = 0.1
    saturation: tuple | None = (0.9, 1.1)
    # event drops (tonic's DropPixel and DropEventByTime, at the run's resolution and frame granularity), after
    # the geometry: a fraction drawn from [0, drop_pixels) of the pixels loses its events in every frame and
    # both polarities; a window of up to drop_time of the frames (per-step frames only) loses all of its events
    drop_pixels: float | None = None
    drop_time: float | None = None

    def __call__(self, image, seed):
        import tensorflow as tf

        if image.shape.rank == 4:  # event frames (T, h, w, c): one draw for all T, so time in the channels
            steps, channels = image.shape[0], image.shape[-1]
            packed = tf.reshape(tf.transpose(image, [1, 2, 0, 3]), [tf.shape(image)[1], tf.shape(image)[2],
                                                                    steps * channels])
            moved = self._image(packed, seed, clip=False)  # frames are T times the accumulated scale: not clipped
            frames = tf.transpose(tf.reshape(moved, [tf.shape(moved)[0], tf.shape(moved)[1], steps, channels]),
                                  [2, 0, 1, 3])
            return self._drop(frames, seed)
        return self._drop(self._image(image, seed), seed)

    def _drop(self, x, seed):
        """The event drops of ``x``, ``(T, h, w, c)`` frames or an ``(h, w, c)`` accumulated frame."""
        import tensorflow as tf

        if not (self.drop_pixels or self.drop_time):
            return x
        # seeds of their own, so the geometric draws stay those of the policies without drops
        seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 1009), 4)
        if self.drop_pixels:
            fraction = tf.random.stateless_uniform([], seeds[0], 0.0, self.drop_pixels)
            kept = tf.random.stateless_uniform(tf.shape(x)[-3:-1], seeds[1]) >= fraction
            x = x * tf.cast(kept, x.dtype)[..., None]  # (h, w, 1): every frame and polarity of a pixel
        if self.drop_time and x.shape.rank == 4:
            steps = tf.shape(x)[0]
            length = tf.cast(tf.random.stateless_uniform([], seeds[2], 0.0, self.drop_time)
                             * tf.cast(steps, tf.float32), tf.int32)
            start = tf.random.stateless_uniform([], seeds[3], 0, steps - length + 1, dtype=tf.int32)
            t = tf.range(steps)
            x = x * tf.cast((t < start) | (t >= start + length), x.dtype)[:, None, None, None]
        return x

    def _image(self, image, seed, clip: bool = True):
        import tensorflow as tf

        size = tf.shape(image)[0]
        width = tf.shape(image)[1]
        channels = image.shape[-1] if image.shape[-1] is not None else 3  # 3 for RGB; the selected bands
        seeds = tf.random.experimental.stateless_split(seed, 9)
        if self.crop_area:
            # a seed of its own, so the other steps draw what they draw in the policies without the crop
            crop_seed = tf.random.experimental.stateless_fold_in(seed, 2003)
            begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), crop_seed, min_object_covered=0.0,
                aspect_ratio_range=self.crop_aspect, area_range=self.crop_area, max_attempts=10)
            image = tf.image.resize(tf.slice(image, begin, extent), [size, width])
        if self.zoom:
            factor = tf.random.stateless_uniform([], seeds[0], self.zoom[0], self.zoom[1])
            new_h = tf.cast(tf.round(tf.cast(size, tf.float32) * factor), tf.int32)
            new_w = tf.cast(tf.round(tf.cast(width, tf.float32) * factor), tf.int32)
            image = tf.image.resize(image, [new_h, new_w])
            image = tf.image.resize_with_crop_or_pad(image, size, width)
        if self.pad_crop:
            pad = tf.maximum(1, tf.cast(tf.round(tf.cast(size, tf.float32) * self.pad_crop), tf.int32))
            image = tf.image.resize_with_crop_or_pad(image, size + pad, width + pad)
            image = tf.image.stateless_random_crop(image, [size, width, channels], seeds[1])
        if self.flips:
            image = tf.image.stateless_random_flip_left_right(image, seeds[2])
            image = tf.image.stateless_random_flip_up_down(image, seeds[3])
        if self.rotations:
            k = tf.random.stateless_uniform([], seeds[4], 0, 4, dtype=tf.int32)
            image = tf.image.rot90(image, k)
        if self.brightness:
            image = tf.image.stateless_random_brightness(image, self.brightness, seeds[5])
        if self.contrast:
            image = tf.image.stateless_random_contrast(image, self.contrast[0], self.contrast[1], seeds[6])
        if self.hue and channels == 3:  # hue and saturation are colour jitter: RGB-like images only
            image = tf.image.stateless_random_hue(image, self.hue, seeds[7])
        if self.saturation and channels == 3:
            image = tf.image.stateless_random_saturation(image, self.saturation[0], self.saturation[1], seeds[8])
        return tf.clip_by_value(image, 0.0, 1.0) if clip else tf.maximum(image, 0.0)


#: Named augmentation policies (``--augment``).
AUGMENTATIONS = {
    "snn4space": Augmentation(),
    "geometric": Augmentation(brightness=None, contrast=None, hue=None, saturation=None),
    # the geometric policy with random resized crops of 35-100 % of the image in place of its zoom and small shifts
    "crops": Augmentation(crop_area=(0.35, 1.0), zoom=None, pad_crop=None, brightness=None, contrast=None, hue=None,
                          saturation=None),
    # for event inputs: the geometry, and events dropped by pixel and by time instead of photometric jitter
    "events": Augmentation(brightness=None, contrast=None, hue=None, saturation=None, drop_pixels=0.1,
                           drop_time=0.25),
    "none": None,
}


def augmentation(name: str) -> Augmentation | None:
    """The augmentation policy called ``name``."""
    if name not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {name!r}: use one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def to_float(image):
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]``; a multi-band source's cached float16 ``[0, 1]`` -> float32."""
    import tensorflow as tf

    if image.dtype != tf.uint8:  # already normalised to [0, 1] (bands.Plan.prepare)
        return tf.cast(image, tf.float32)
    return tf.cast(image, tf.float32) / 255.0


def training_batches(decoded, batch_size: int, seed: int, epoch: int, augmentation: Augmentation | None,
                     transform: EdgeFilter | None = None):
    """Shuffled, augmented, batched training data for one epoch; ``transform`` applies after augmentation.

    Shuffle order and augmentation depend only on ``(seed, epoch)``, so a
    resumed run sees exactly the batches the uninterrupted run would have.
    """
    import tensorflow as tf

    epoch_seed = seed * 100003 + epoch
    count = int(decoded.cardinality())
    ds = decoded.shuffle(buffer_size=count if count > 0 else 10000, seed=epoch_seed, reshuffle_each_iteration=False)
    if augmentation is not None:
        pair_seeds = tf.data.Dataset.random(seed=epoch_seed).batch(2)
        ds = tf.data.Dataset.zip((ds, pair_seeds)).map(
            lambda xy, s: (augmentation(to_float(xy[0]), s), xy[1]), num_parallel_calls=_PARALLEL,
            deterministic=True)
    else:
        ds = ds.map(lambda x, y: (to_float(x), y))
    return _fixed_parallelism(_transformed(ds.batch(batch_size), transform).prefetch(2))


def _transformed(batches, transform: EdgeFilter | None):
    return batches if transform is None else batches.map(lambda x, y: (transform(x), y))


#: Parallel calls of the per-image maps of a batch pipeline.
_PARALLEL = max(1, min(4, os.cpu_count() or 1))


def _fixed_parallelism(ds):
    """``ds`` without tf.data's autotuning. With it, ``model.fit`` on a new pipeline each epoch returned about
    5 s after its last batch in about half of the epochs on 2 cores (5.5 s epochs took 10.7 s); with fixed
    parallelism and prefetching the epochs are as fast and none stalls."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def evaluation_batches(decoded, batch_size: int, transform: EdgeFilter | None = None):
    """Batched evaluation data, in split order, no augmentation; ``transform`` applied to each batch."""
    batches = decoded.map(lambda x, y: (to_float(x), y)).batch(batch_size)
    return _fixed_parallelism(_transformed(batches, transform).prefetch(2))

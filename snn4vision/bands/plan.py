"""``--bands`` (:func:`parse_selection`, :func:`resolve`) and a run's :class:`Plan`: the selected bands and their
training statistics, and the decoded, normalised images of a multi-band source."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import resources
from ..errors import UserError
from .tiff import Layout, check_decode_size, read_bands, tiff_info

#: Standard deviations either side of the mean that [0, 1] spans after normalisation.
SIGMAS = 3.0


# --------------------------------------------------------------------------
# --bands
# --------------------------------------------------------------------------
def parse_selection(text: str | None) -> list | None:
    """``--bands``: None or "all" -> None (every band); else its comma-separated items, band numbers
    (from 1, as ``gdal_translate -b``) as ints and names as strings."""
    if text is None or str(text).strip().lower() == "all":
        return None
    items = [item.strip() for item in str(text).split(",")]
    if not all(items):
        raise UserError(f"--bands must be all, or band numbers (from 1) or names separated by commas, such as "
                        f"4,3,2,8 or B04,B03,B02,B08; got {text!r}")
    parsed = [int(item) if re.fullmatch(r"[+-]?\d+", item) else item for item in items]
    low = [item for item in parsed if isinstance(item, int) and item < 1]
    if low:
        raise UserError(f"--bands {text}: bands are numbered from 1 (as gdal_translate -b), got {low[0]}")
    twice = sorted({str(item) for item in parsed if parsed.count(item) > 1})
    if twice:
        raise UserError(f"--bands {text} names band {twice[0]} twice: give each band once")
    return parsed


def resolve(text: str | None, layout: Layout, source: str) -> list:
    """The 0-based indices of ``--bands text`` in a source of ``layout``; one line naming the source's bands
    when an item is not among them."""
    selection = parse_selection(text)
    if selection is None:
        return list(range(layout.count))
    indices = []
    for item in selection:
        if isinstance(item, int):
            if item > layout.count:
                raise UserError(f"--bands {text}: {source} has {layout.count} band(s), numbered 1 to {layout.count}"
                                f"{_names_hint(layout)}; band {item} is not one of them: choose among those")
            indices.append(item - 1)
        elif not layout.names:
            raise UserError(f"--bands {text}: the images of {source} do not name their bands: select them by "
                            f"number, 1 to {layout.count}")
        elif item not in layout.names:
            matches = [n for n in layout.names if n.lower() == item.lower()]
            if len(matches) != 1:
                raise UserError(f"--bands {text}: {source} has no band named {item}; its bands are "
                                f"{', '.join(layout.names)}")
            indices.append(layout.names.index(matches[0]))
        else:
            indices.append(layout.names.index(item))
    if len(set(indices)) != len(indices):
        raise UserError(f"--bands {text} selects one band twice (by number and by name): give each band once")
    return indices


def _names_hint(layout: Layout) -> str:
    return f" ({', '.join(layout.names)})" if layout.names else ""


# --------------------------------------------------------------------------
# Statistics and the plan
# --------------------------------------------------------------------------
class RunningStats:
    """Per-band mean and (population) variance over many images, merged exactly in float64 (Chan et al.)."""

    def __init__(self, bands: int):
        self.count = 0
        self.mean = np.zeros(bands)
        self.m2 = np.zeros(bands)

    def add(self, image: np.ndarray) -> None:
        pixels = np.asarray(image, np.float64).reshape(-1, image.shape[-1])
        n = len(pixels)
        if not n:
            return
        mean = pixels.mean(axis=0)
        m2 = ((pixels - mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))


@dataclass
class Plan:
    """A run's bands: ``indices`` (0-based, in the model's channel order) of a source of ``layout``, with the
    training split's per-band ``mean`` and ``std`` (in the source's units)."""

    layout: Layout
    indices: list
    mean: list
    std: list
    images: int = 0

    @property
    def channels(self) -> int:
        return len(self.indices)

    @property
    def names(self) -> list:
        return [self.layout.names[i] if self.layout.names else str(i + 1) for i in self.indices]

    def to_json(self) -> dict:
        return {"numbers": [i + 1 for i in self.indices], "names": self.names, "mean": list(map(float, self.mean)),
                "std": list(map(float, self.std)), "images": self.images, "split": "train",
                "source": {"bands": self.layout.count, "dtype": self.layout.dtype,
                           "names": list(self.layout.names) if self.layout.names else None}}

    @classmethod
    def from_json(cls, obj: dict) -> "Plan":
        source = obj["source"]
        layout = Layout(int(source["bands"]), source["dtype"], tuple(source["names"]) if source["names"] else None)
        return cls(layout, [int(n) - 1 for n in obj["numbers"]], list(obj["mean"]), list(obj["std"]),
                   int(obj.get("images", 0)))

    def normalise(self, images):
        """Raw band values ``(..., channels)`` (float32 tensor) -> ``[0, 1]``: ``0.5 + (x - mean) / (6 std)``,
        clipped; a band constant over the training split maps to 0.5 there."""
        import tensorflow as tf

        mean = tf.constant(np.asarray(self.mean, np.float32))
        std = np.asarray(self.std, np.float64)
        scale = tf.constant(np.where(std > 0, 1.0 / (2 * SIGMAS * np.where(std > 0, std, 1.0)), 0.0)
                            .astype(np.float32))
        return tf.clip_by_value(0.5 + (images - mean) * scale, 0.0, 1.0)

    def prepare(self, image, image_size: int):
        """One image's selected raw bands ``(h, w, channels)`` float32 -> resized, normalised, as float16 (the
        cached form; :func:`snn4vision.data.to_float` turns it into float32)."""
        import tensorflow as tf

        image = tf.ensure_shape(tf.convert_to_tensor(image, tf.float32), [None, None, self.channels])
        resized = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(self.normalise(resized), tf.float16)


def plan_of(config) -> Plan | None:
    """The :class:`Plan` recorded in a run's config (None: an RGB run)."""
    stats = getattr(config, "band_stats", None)
    return Plan.from_json(stats) if stats else None


def channels_of(config) -> int:
    """Input channels of the run's models: the selected bands, or 3 (RGB)."""
    plan = plan_of(config)
    return plan.channels if plan else 3


def prepare(config, source, indices_of) -> Plan | None:
    """Give ``source`` the run's :class:`Plan` (``source.plan``), computing it on first use.

    ``config``: the run's TrainConfig (``bands``, ``band_stats``; ``band_stats`` is filled in here, from the
    training split only, when it is empty); ``indices_of(split)``: that split's indices into ``source``.
    An RGB source without ``--bands`` is left as it is. Every refusal comes before anything is written: a
    float source's every image is read here, so that a NaN sample is named now, not mid-training.
    """
    layout = getattr(source, "layout", None)
    if layout is None:
        if config.bands is not None or config.band_stats:
            raise UserError(f"--bands selects bands of multi-band images, but {source.name} holds RGB images: "
                            "drop --bands (or point --dataset at the multi-band images the run was trained on)")
        return None
    if config.band_stats:
        plan = Plan.from_json(config.band_stats)
        if (plan.layout.count, plan.layout.dtype) != (layout.count, layout.dtype):
            raise UserError(f"the data at {source.name} has {layout.describe()}, but the run was trained on "
                            f"{plan.layout.describe()}: point --data-dir at the data the run was trained on")
        source.plan = plan
        return plan
    indices = resolve(config.bands, layout, source.name)
    splits = {split: indices_of(split) for split in ("train", "val", "test")}
    images = sum(len(v) for v in splits.values())
    resources.check_memory(images * config.image_size ** 2 * len(indices) * 2,
                           f"keeping the {images} images' {len(indices)} bands decoded at "
                           f"{config.image_size}x{config.image_size} in memory",
                           f"lower --image-size (now {config.image_size}), select fewer --bands or use fewer images")
    stats = RunningStats(len(indices))
    check_all = layout.dtype.startswith("float")  # integers cannot be NaN: only the training split is read
    for split in ("train", "val", "test") if check_all else ("train",):
        for image in raw_images(source, splits[split], indices):
            if split == "train":
                stats.add(image)
    constant = [i + 1 for i, s in zip(indices, stats.std) if s == 0]
    if constant:
        print(f"warning: band(s) {', '.join(map(str, constant))} are constant over the training split and carry "
              "no information: leave them out with --bands", file=sys.stderr, flush=True)
    if len(indices) != 3 and getattr(config, "augment", None) == "snn4space":
        print(f"warning: --augment snn4space's hue and saturation jitter needs 3 colour bands: with "
              f"{len(indices)} bands only its geometry, brightness and contrast are applied", file=sys.stderr,
              flush=True)
    plan = Plan(layout, indices, stats.mean.tolist(), stats.std.tolist(), len(splits["train"]))
    config.band_stats = plan.to_json()
    source.plan = plan
    return plan


def raw_images(source, indices, bands: list):
    """The selected raw bands (float32 ``(h, w, len(bands))``) of ``source``'s images ``indices``, one by one,
    NaN refused (:func:`read_bands`)."""
    if source.kind == "folder":
        for i in indices:
            yield read_bands(source.root / source.items[i], source.layout, bands)
        return
    import tensorflow as tf

    wanted = tf.constant(np.asarray(indices, np.int64))
    dataset = source._tfds_dataset.enumerate().filter(lambda i, e: tf.reduce_any(tf.equal(i, wanted)))
    for i, example in dataset.map(lambda i, e: (i, e[TFDS_IMAGE_KEY])).as_numpy_iterator():
        image = np.asarray(example, np.float32)[..., bands]
        if not np.isfinite(image).all():
            raise UserError(f"image {i} of {source.name} has NaN or infinite samples: prepare the dataset again")
        yield image


#: The image feature of TFDS's multi-band datasets.
TFDS_IMAGE_KEY = "sentinel2"


def decoded_dataset(source, indices, image_size: int):
    """``tf.data`` of ``(float16 image (s, s, channels) in [0, 1], int64 label)`` of a multi-band source with
    its plan, cached."""
    import tensorflow as tf

    plan = getattr(source, "plan", None)
    if plan is None:
        raise UserError(f"{source.name} holds multi-band images: open it through a run (rundir.RunData, which "
                        "selects --bands and computes their statistics) before decoding it")
    labels = source.labels[indices]
    autotune = tf.data.AUTOTUNE
    if source.kind == "folder":
        layout, bands = source.layout, list(plan.indices)

        def read(path):
            try:
                return read_bands(path.decode(), layout, bands)
            except UserError as exc:  # tf.data reports it as an InvalidArgumentError; the caller names the file
                raise ValueError(f"decode failed: {exc}") from None

        paths = [str(source.root / source.items[i]) for i in indices]
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        ds = ds.map(lambda p, y: (plan.prepare(tf.numpy_function(read, [p], tf.float32, stateful=False),
                                               image_size), y),
                    num_parallel_calls=autotune, deterministic=True)
    else:
        wanted = tf.constant(np.asarray(indices, np.int64))
        gather = tf.constant(np.asarray(plan.indices, np.int32))
        ds = source._tfds_dataset.enumerate().filter(lambda i, e: tf.reduce_any(tf.equal(i, wanted)))
        ds = ds.map(lambda i, e: (plan.prepare(tf.gather(tf.cast(e[TFDS_IMAGE_KEY], tf.float32), gather, axis=-1),
                                               image_size), e["label"]), num_parallel_calls=autotune)
    return ds.cache()


def load_file(path: str | Path, plan: Plan, image_size: int) -> np.ndarray:
    """One multi-band file as a run's models see it: float32 ``(s, s, channels)`` in ``[0, 1]``, the same
    values as the run's evaluation batches (float16-rounded as the cache is)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image file {path} does not exist")
    with open(path, "rb") as handle:
        if handle.read(4) not in (b"II*\x00", b"MM\x00*"):
            raise UserError(f"image {path} is not a TIFF, but the run was trained on multi-band TIFFs "
                            f"({plan.layout.describe()}): give TIFFs with those bands")
    info = tiff_info(path)
    too_large = check_decode_size(path, info)
    if too_large:
        raise UserError(f"image {too_large}")
    image = read_bands(path, plan.layout, plan.indices)
    return plan.prepare(image, image_size).numpy().astype(np.float32)

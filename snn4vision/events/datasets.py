"""Event datasets on disk, laid out as image datasets (``root/<class>/<recording>``), and how a run turns their
recordings into model inputs (:class:`Binning`, :func:`prepare`).

An event dataset is split with the image datasets' seeded stratified split (:func:`event_split_manifest`, which
calls :func:`snn4vision.data.stratified_split`), so an event dataset emulated from an image folder splits into
the recordings of the images' split.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import data, resources
from ..errors import UserError
from .frames import BINNING_MODES, to_frames
from .recordings import EVENT_EXTENSIONS, Recording, read_events, sensor_dims

#: ``--event-binning accumulated``: a spiking network sees the accumulated frame at every step, as it would an
#: image (the frame-based control of Iyer et al. 2021); a CNN trains on it whatever the binning.
ACCUMULATED = "accumulated"
RUN_BINNINGS = (*BINNING_MODES, ACCUMULATED)
#: The percentile of the training split's accumulated counts (pixels and channels) that a run's inputs divide by.
SCALE_PERCENTILE = 99.0



# --------------------------------------------------------------------------
# Event datasets on disk
# --------------------------------------------------------------------------
@dataclass
class EventSource:
    """A labelled collection of event files laid out as ``root/<class>/<recording>``: ``items`` are paths
    relative to ``root``, ``labels[i]`` the class index of ``items[i]`` into ``classes`` (as
    :class:`snn4vision.data.ImageSource`). ``sensor_size`` is used for files that do not store theirs."""

    root: Path
    classes: list
    items: list
    labels: np.ndarray
    sensor_size: object = None

    #: set by :func:`prepare` for a run: how its recordings become model inputs (:class:`Binning`)
    binning: object = field(default=None, repr=False)

    #: what :func:`snn4vision.data.decoded_dataset` dispatches on (an image source's kind is folder or tfds)
    kind = "events"

    @property
    def name(self) -> str:
        return str(self.root)

    def describe(self) -> dict:
        return {"kind": "events", "name": self.name, "root": str(self.root), "num_recordings": len(self.items),
                "num_classes": len(self.classes),
                "sensor_size": list(sensor_dims(self.sensor_size)) if self.sensor_size not in (None, "infer")
                else self.sensor_size}

    def read(self, index: int) -> Recording:
        return read_events(self.root / self.items[index], self.sensor_size)

    def decoded(self, indices, image_size: int, steps: int | None = None):
        """``tf.data`` of ``(float16 inputs, int64 label)`` of the recordings ``indices``, binned as
        :attr:`binning` says (:func:`model_inputs`; ``steps``: into that many per-step frames), cached; the
        counterpart of an image source's decoded images."""
        import tensorflow as tf

        if self.binning is None:
            raise RuntimeError("EventSource.decoded before events.prepare")
        indices = np.asarray(indices, np.int64)
        inputs = [model_inputs(self.read(int(i)), self.binning, image_size, steps).astype(np.float16)
                  for i in indices]
        shape = dataclasses.replace(self.binning, frames=steps or self.binning.frames).input_shape(image_size)
        stacked = np.stack(inputs) if inputs else np.zeros((0, *shape), np.float16)
        return tf.data.Dataset.from_tensor_slices((stacked, self.labels[indices])).cache()


def scan_event_folder(root, sensor_size=None) -> EventSource:
    """List ``root/<class>/<recording>`` (classes and files sorted by name; hidden entries left out). Files are
    not read here: :meth:`EventSource.read` checks each as it is read."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"event folder {root} {'is not a folder' if root.exists() else 'does not exist'}: pass the "
                        "folder that holds one sub-folder of event files per class")
    class_dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if not class_dirs:
        raise UserError(f"event folder {root} has no class sub-folders: lay it out as {root}/<class>/<recording>")
    classes, items, labels = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = [f for f in sorted(class_dir.iterdir())
                 if f.suffix.lower() in EVENT_EXTENSIONS and f.is_file() and not f.name.startswith(".")]
        if not files:
            raise UserError(f"class folder {class_dir} holds no event files ({', '.join(EVENT_EXTENSIONS)}): add "
                            "recordings or remove it")
        classes.append(class_dir.name)
        items.extend(str(f.relative_to(root)) for f in files)
        labels.extend([label] * len(files))
    return EventSource(root, classes, items, np.asarray(labels, np.int64), sensor_size)


def event_split_manifest(source: EventSource, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                         folds: int = 0, fold: int = 0) -> dict:
    """The files (and labels) of each split, in the layout of :func:`snn4vision.data.split_manifest` and cut by
    the same code (:func:`~snn4vision.data.stratified_split`, or :func:`~snn4vision.data.stratified_folds` with
    ``folds``): an event dataset emulated from an image folder splits into the same recordings as its images."""
    if folds:
        indices = data.stratified_folds(source.labels, folds, fold, fractions, seed)
    else:
        indices = data.stratified_split(source.labels, fractions, seed)
    manifest = {"source": source.describe(), "fractions": list(fractions), "seed": seed}
    if folds:
        manifest.update(folds=folds, fold=fold)
    for name in data.SPLITS:
        manifest[name] = [[source.items[i], int(source.labels[i])] for i in indices[name]]
    empty = [name for name in data.SPLITS if not manifest[name]]
    if empty:
        smallest = int(np.unique(source.labels, return_counts=True)[1].min())
        raise UserError(f"the {' and '.join(empty)} split would be empty (fractions {list(fractions)} of "
                        f"{smallest} recording(s) in the smallest class of {source.name}): use more recordings per "
                        "class or larger fractions for it")
    return manifest


def load_frames(source: EventSource, indices, n_frames: int, mode: str = "time",
                duration_us: int | None = None) -> tuple:
    """``(frames float32 (N, n_frames, height, width, 2), labels int64 (N,))`` of the recordings ``indices``;
    every recording must have the same sensor size (refused otherwise, naming the first that differs)."""
    frames, size = [], None
    for i in indices:
        recording = source.read(int(i))
        if size is None:
            size = recording.sensor_size
        elif recording.sensor_size != size:
            raise UserError(f"event file {recording.path} has a {recording.sensor_size[0]}x{recording.sensor_size[1]}"
                            f" sensor, the others {size[0]}x{size[1]}: use recordings of one sensor size")
        frames.append(to_frames(recording.events, size, n_frames, mode, duration_us=duration_us))
    if not frames:
        return np.zeros((0, n_frames, 0, 0, 2), np.float32), np.zeros(0, np.int64)
    return np.stack(frames), source.labels[np.asarray(indices, np.int64)]


# --------------------------------------------------------------------------
# Event datasets in the pipeline
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Binning:
    """How a run turns a recording into model inputs (recorded in config.json's ``events``).

    ``frames`` None: the accumulated frame ``(s, s, 2)`` (a CNN, or any network with ``mode``
    :data:`ACCUMULATED`, which then sees it at every step); T: one frame per step ``(T, s, s, 2)`` (a spiking
    transformer), binned by ``mode`` over the recording, or over its first ``duration_us`` (None: from
    its first event to its last). Counts are resized to the run's ``s x s`` (bilinear, antialiased: a linear
    map) and divided by ``scale``, the :data:`SCALE_PERCENTILE` th percentile of the training split's
    accumulated frames; the accumulated frame then saturates at 1, like an image. A frame of T steps is
    multiplied by T and not saturated, so that the frames' mean over time is the accumulated frame (where it does
    not saturate): a converted SNN, which integrates its input, sees the same mean input either way.
    """

    sensor_size: tuple
    frames: int | None = None
    mode: str = "time"
    duration_us: int | None = None
    scale: float = 1.0

    def input_shape(self, image_size: int) -> tuple:
        square = (image_size, image_size, 2)
        return square if self.frames is None else (self.frames, *square)


def binning_of(config, timesteps: int | None = None) -> Binning | None:
    """The :class:`Binning` recorded in a run's config (None: an image run); a spiking transformer's frames are
    its ``timesteps`` (``timesteps`` overrides them: the recording is binned again, as finely as asked)."""
    recorded = getattr(config, "events", None)
    if not recorded:
        return None
    frames = (int(timesteps or config.transformer.timesteps) if config.spiking and recorded["mode"] != ACCUMULATED
              else None)
    return Binning(tuple(recorded["sensor_size"]), frames, recorded["mode"], recorded["duration_us"],
                   float(recorded["scale"]))


def _within(events: np.ndarray, duration_us: int | None) -> np.ndarray:
    """The events of the first ``duration_us`` microseconds (all of them for None)."""
    if duration_us is None or not len(events):
        return events
    return events[events["t"] - events["t"][0] < duration_us]


def model_inputs(recording: Recording, binning: Binning, image_size: int, steps: int | None = None) -> np.ndarray:
    """``float32`` model inputs of one recording: ``binning``'s accumulated frame ``(s, s, 2)`` or its frames
    ``(T, s, s, 2)``; ``steps``: ``(steps, s, s, 2)`` per-step frames instead (a converted SNN's input), scaled
    as the transformer's, except in mode :data:`ACCUMULATED` (the accumulated frame, which the SNN sees at every
    step). A recording of another sensor size than the run's is refused."""
    import tensorflow as tf

    if tuple(recording.sensor_size) != tuple(binning.sensor_size):
        (w, h), (rw, rh) = recording.sensor_size, binning.sensor_size
        raise UserError(f"event file {recording.path} has a {w}x{h} sensor, the run's recordings {rw}x{rh}: use "
                        "recordings of one sensor size")
    events = _within(recording.events, binning.duration_us)
    count = None if binning.mode == ACCUMULATED else steps or binning.frames
    if count is None:  # every event of the span in one frame, whatever the mode
        counts = to_frames(events, recording.sensor_size, 1, "time")
    else:
        counts = to_frames(events, recording.sensor_size, count, binning.mode)
    if counts.shape[1:3] != (image_size, image_size):
        counts = tf.image.resize(counts, [image_size, image_size], antialias=True).numpy()
    values = counts / np.float32(binning.scale) * np.float32(count or 1)
    # the accumulated frame saturates at 1, as an image's pixels do (a scale of 1: unscaled, for prepare)
    return (np.minimum(values[0], 1.0) if binning.scale != 1.0 else values[0]) if count is None else values


def input_events(batches, binning: Binning, steps: int) -> float:
    """The input events of ``(frames, labels)`` batches of :meth:`EventSource.decoded` at ``steps`` steps, all
    images together: the frames' counts at the run's resolution (resizing keeps the mean count per pixel, so
    a recording shrunk to a quarter of its pixels counts a quarter of its events)."""
    total = sum(float(np.sum(np.asarray(x, np.float64))) for x, _ in batches)
    return total * binning.scale / steps


def looks_like_event_folder(path) -> bool:
    """Whether ``path`` is a folder of class folders of event files (and no images); a folder that holds both is
    refused, since which of the two to train on would be a guess."""
    path = Path(path)
    if not path.is_dir():
        return False
    found = set()
    for sub in path.iterdir():
        if sub.is_dir() and not sub.name.startswith("."):
            for f in sub.iterdir():
                suffix = f.suffix.lower()
                found |= {"events"} if suffix in EVENT_EXTENSIONS else {"images"} if suffix in data.IMAGE_EXTENSIONS \
                    else set()
            if len(found) == 2:
                raise UserError(f"{path} holds both images and event files ({sub.name} among others): keep one kind "
                                "per dataset folder")
    return found == {"events"}


def open_source(dataset: str, data_dir: str | None = None, sensor_size=None):
    """``--dataset`` as an :class:`EventSource` when it is a folder of event files (``sensor_size``, ``--sensor-size``:
    for files that do not store theirs), else as :func:`snn4vision.data.open_source` opens it."""
    if dataset not in data.TFDS_NAMES and looks_like_event_folder(dataset):
        return scan_event_folder(dataset, None if sensor_size is None else sensor_dims(sensor_size, "--sensor-size"))
    return data.open_source(dataset, data_dir)


def split_manifest(source, fractions, seed: int, folds: int = 0, fold: int = 0) -> dict:
    """A run's split manifest of an event or image source (the same seeded stratified split)."""
    if isinstance(source, EventSource):
        return event_split_manifest(source, fractions, seed, folds, fold)
    return data.split_manifest(source, fractions, seed, folds, fold)


def prepare(config, source, indices_of) -> Binning | None:
    """Give an event ``source`` the run's :class:`Binning` (``source.binning``), recording it in
    ``config.events`` on first use (the sensor size from the training split's first recording, the scale from
    the training split's accumulated frames). An image source is left as it is; flags and recorded binnings
    that do not fit the source are refused in one line."""
    recorded = getattr(config, "events", None) or {}
    if not isinstance(source, EventSource):
        if recorded:
            raise UserError(f"the run was trained on event recordings, but {source.name} holds images: point "
                            "--data-dir at the event folder the run was trained on")
        if config.event_binning is not None or config.event_duration_us is not None \
                or config.event_sensor_size is not None:
            raise UserError(f"--event-binning, --event-duration-us and --sensor-size are for event recordings, but "
                            f"{source.name} holds images: drop them")
        return None
    if config.bands is not None:
        raise UserError(f"--bands selects bands of multi-band images, but {source.name} holds event recordings: "
                        "drop --bands")
    if config.input_transform != "none":
        raise UserError(f"--input-transform {config.input_transform} filters images, but {source.name} holds event "
                        "recordings: drop it")
    if recorded:
        source.binning = binning_of(config)
        return source.binning
    train = indices_of("train")
    first = source.read(int(train[0]))
    mode = config.event_binning or "time"
    frames = int(config.transformer.timesteps) if config.spiking and mode != ACCUMULATED else None
    unscaled = Binning(tuple(first.sensor_size), frames, mode, config.event_duration_us)
    splits = sum(len(indices_of(split)) for split in data.SPLITS)
    per_input = int(np.prod(unscaled.input_shape(config.image_size)))
    resources.check_memory(splits * per_input * 2, f"keeping the {splits} recordings binned as "
                                                   f"{unscaled.input_shape(config.image_size)} in memory",
                           f"lower --image-size (now {config.image_size}) or --timesteps, or use fewer recordings")
    accumulated = dataclasses.replace(unscaled, frames=None)
    # the 99th percentile, not the largest count: a few hot pixels would leave every other input near 0, and
    # BatchNorm's running statistics (which start at unit variance) then silence the trained CNN in inference
    values = np.concatenate([model_inputs(source.read(int(i)), accumulated, config.image_size).ravel() for i in train])
    scale = float(np.percentile(values, SCALE_PERCENTILE))
    for split in ("val", "test"):  # a recording of another sensor is refused now, not after the training
        for i in indices_of(split):
            recording = source.read(int(i))
            if tuple(recording.sensor_size) != unscaled.sensor_size:
                model_inputs(recording, unscaled, config.image_size)  # names it
    if not scale > 0:
        raise UserError(f"the training recordings of {source.name} hold no events within --event-duration-us "
                        f"{config.event_duration_us}: raise it or drop it")
    binning = dataclasses.replace(unscaled, scale=scale)
    config.events = {"sensor_size": list(binning.sensor_size), "mode": binning.mode, "frames": frames,
                     "duration_us": binning.duration_us, "scale": scale,
                     "input": f"{frames} ON/OFF frames, one per step" if frames is not None else
                     "the accumulated ON/OFF frame at every step" if config.spiking else "the accumulated ON/OFF frame"}
    source.binning = binning
    return binning


def load_file(path, config, image_size: int, steps: int | None = None) -> np.ndarray:
    """One event file's model inputs for a run trained on events (:func:`model_inputs`); anything but an event
    file is refused in one line."""
    path = Path(path)
    if path.suffix.lower() not in EVENT_EXTENSIONS:
        raise UserError(f"{path} is not an event file: this run was trained on event recordings, give "
                        f"{', '.join(EVENT_EXTENSIONS)} files")
    binning = binning_of(config)
    return model_inputs(read_events(path, binning.sensor_size), binning, image_size, steps)


"""Event-camera data (DVS recordings): reading, checking, binning into frames, augmentation, and an emulator
that turns still images into event recordings.

*Events* are a NumPy structured array of :data:`EVENT_DTYPE`, the layout tonic uses::

    x: int16   column, 0 .. width - 1, left to right
    y: int16   row,    0 .. height - 1, top to bottom (image convention)
    t: int64   time in microseconds, sorted (non-decreasing)
    p: int8    polarity: 1 = ON (brighter), 0 = OFF (darker)

A *sensor size* is ``(width, height)`` (tonic's order, without its polarity count; a tonic-style
``(width, height, 2)`` is accepted too). Frames are channels last, as Keras wants:
:func:`to_frames` returns ``float32 (T, height, width, 2)`` of event counts, channel 0 counting OFF events and
channel 1 ON events (channel index = polarity value); :func:`accumulated_frame` returns ``(height, width, 2)``.

Files (:func:`read_events`, :func:`write_events`):

- ``.npy``: a structured array with fields x, y, t, p (any order, any integer or bool types). No sensor size.
- ``.npz``: either an ``events`` structured array or four arrays ``x``, ``y``, ``t``, ``p``; optionally a
  ``sensor_size`` array ``(width, height)``.
- ``.h5`` / ``.hdf5``: a group ``events`` holding 1-D datasets ``x``, ``y``, ``t``, ``p`` (the DSEC layout),
  or those four datasets at the file's root, or one structured dataset ``events``; the sensor size, when
  stored, is an attribute ``sensor_size = (width, height)`` (or ``width`` and ``height``) on that group or
  dataset or on the file.
- ``.aedat``: AEDAT 2.0 from a DVS128 (jAER; CIFAR10-DVS, the original DVS128 Gesture recordings): ``#``
  header lines, then 8-byte big-endian records (32-bit address, 32-bit microsecond timestamp). Address bit 0 is
  the polarity (0 = ON, 1 = OFF), bits 1-7 the column as jAER mirrors it (x = 127 - bits), bits 8-14 the row
  counted from the bottom (jAER's origin), bit 15 marks external (sync) events, which are dropped. Rows are
  turned to the top-down image convention here (y = 127 - bits), so frames appear upright. The sensor is
  128 x 128. Timestamp wrap-arounds of the 32-bit counter are undone. Other AEDAT versions are refused.

The sensor size comes from the file where the format stores it, else from the caller's ``sensor_size``, else,
only when the caller passes ``sensor_size="infer"``, from the largest coordinates (``max + 1``), which
under-estimates the sensor of a recording that never reached its edges.

Every problem with a file is raised as one :class:`~snn4vision.errors.UserError` line naming the file and the
fix (:func:`check_events`).

Datasets: an event dataset on disk is laid out like an image dataset, ``root/<class>/<recording>``
(:func:`scan_event_folder`), and is split with the image datasets' seeded stratified split
(:func:`event_split_manifest`, which calls :func:`snn4vision.data.stratified_split`).

The emulator (:func:`emulate`) makes recordings the way N-MNIST, N-Caltech101 and ES-ImageNet were made from
still images: the image moves in small saccades and each pixel emits an event whenever its log intensity has
changed by a contrast threshold since its last event. :func:`write_emulated_dataset` turns an image folder into
an event dataset of ``.npz`` files.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import data, resources
from .checkpoints import atomic_write, atomic_write_json
from .errors import UserError

#: The structured dtype of events (tonic's fields; polarity as 0/1 int8).
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
FIELDS = ("x", "y", "t", "p")
EVENT_EXTENSIONS = (".npy", ".npz", ".h5", ".hdf5", ".aedat")
#: The DVS128's sensor (width, height), the only AEDAT 2.0 sensor read.
DVS128_SIZE = (128, 128)
BINNING_MODES = ("time", "count")
#: ``--event-binning accumulated``: a spiking network sees the accumulated frame at every step, as it would an
#: image (the frame-based control of Iyer et al. 2021); a CNN trains on it whatever the binning.
ACCUMULATED = "accumulated"
RUN_BINNINGS = (*BINNING_MODES, ACCUMULATED)
#: The percentile of the training split's accumulated counts (pixels and channels) that a run's inputs divide by.
SCALE_PERCENTILE = 99.0


@dataclass(frozen=True)
class Recording:
    """Events read from a file, checked: ``events`` of :data:`EVENT_DTYPE` sorted by time, ``sensor_size``
    ``(width, height)``, and the file they came from."""

    events: np.ndarray
    sensor_size: tuple
    path: str = ""

    @property
    def duration_us(self) -> int:
        return int(self.events["t"][-1] - self.events["t"][0]) if len(self.events) else 0


# --------------------------------------------------------------------------
# Making and checking events
# --------------------------------------------------------------------------
def make_events(x, y, t, p) -> np.ndarray:
    """A structured array of :data:`EVENT_DTYPE` from four equally long sequences (not checked)."""
    x = np.asarray(x)
    events = np.empty(len(x), EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


def sensor_dims(sensor_size, name: str = "sensor_size") -> tuple:
    """``(width, height)`` as ints from ``(width, height)`` or tonic's ``(width, height, polarities)``."""
    try:
        dims = tuple(int(v) for v in np.asarray(sensor_size).ravel())
    except (TypeError, ValueError):
        dims = ()
    if len(dims) == 3:  # tonic's (width, height, 2)
        dims = dims[:2]
    if len(dims) != 2 or min(dims) < 1:
        raise UserError(f"{name} {sensor_size!r} is not a sensor size: give (width, height) in pixels, "
                        "e.g. (128, 128)")
    return dims


def check_events(events: np.ndarray, sensor_size, where: str = "the events",
                 size_stored: bool = False) -> np.ndarray:
    """``events`` as :data:`EVENT_DTYPE`, or one UserError line naming ``where`` (a file) and the fix
    (``size_stored``: the sensor size is the file's own, so passing another is not the fix).

    Refused: missing fields, no events, coordinates or times that are not whole numbers, polarities other than
    0/1 (or -1/1, read as OFF/ON; bools are 0/1), times not sorted, coordinates outside ``sensor_size``.
    """
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    missing = [f for f in FIELDS if f not in names]
    if missing:
        found = f"it has {', '.join(names)}" if names else "it is not a structured array of named fields"
        raise UserError(f"{where} lacks the field(s) {', '.join(missing)} ({found}): store events with fields "
                        "x, y (pixels), t (microseconds) and p (polarity)")
    events = np.ravel(events)
    if len(events) == 0:
        raise UserError(f"{where} holds no events: remove the recording or record it again")
    for name in ("x", "y", "t"):
        column = events[name]
        if column.dtype.kind == "f" and not (np.isfinite(column).all() and np.all(column == np.round(column))):
            unit = "microseconds (e.g. np.round(t_seconds * 1e6))" if name == "t" else "pixels"
            raise UserError(f"{where} has {name} values that are not whole numbers: store {name} as integer {unit}")
        if column.dtype.kind not in "biuf":
            raise UserError(f"{where} has {name} values of type {column.dtype}: store {name} as integers")
    polarity = events["p"]
    values = set(np.unique(polarity).tolist()) if polarity.dtype.kind in "biuf" else {"?"}
    if not (values <= {0, 1} or values <= {-1, 1}):  # bools are 0/1; 1.0 equals 1
        shown = ", ".join(str(v) for v in np.unique(polarity)[:5])
        raise UserError(f"{where} has unknown polarity values ({shown}): polarity p must be 1 (ON) and 0 (OFF), "
                        "or 1 and -1")
    t = events["t"].astype(np.int64)
    back = np.flatnonzero(np.diff(t) < 0)
    if len(back):
        i = int(back[0]) + 1
        raise UserError(f"event times in {where} are not sorted (event {i} at t={t[i]} us comes after "
                        f"t={t[i - 1]} us): sort the events by t before saving them")
    width, height = sensor_dims(sensor_size)
    x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
    if x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height:
        raise UserError(f"event coordinates in {where} fall outside its {width}x{height} sensor (x {x.min()} .. "
                        f"{x.max()}, y {y.min()} .. {y.max()}): "
                        + ("the size is the file's own: fix the file's size or its events" if size_stored else
                           "pass the sensor's size (sensor_size=(width, height), or --sensor-size WIDTH HEIGHT)"))
    checked = np.empty(len(events), EVENT_DTYPE)
    checked["x"], checked["y"], checked["t"] = x, y, t
    checked["p"] = polarity.astype(np.int64) > 0  # -1/1 and 0/1 alike: ON is 1
    return checked


# --------------------------------------------------------------------------
# Reading and writing files
# --------------------------------------------------------------------------
def read_events(path, sensor_size=None) -> Recording:
    """Read and check one event file (the formats of the module docstring).

    ``sensor_size``: ``(width, height)`` for formats that do not store it (``.npy``, files without the
    attribute); a stored size wins, and a different one given here is refused. ``"infer"``: use the largest
    coordinates + 1 when the file does not say.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EVENT_EXTENSIONS:
        raise UserError(f"{path} is not an event file ({suffix or 'no extension'}): use one of "
                        f"{', '.join(EVENT_EXTENSIONS)}")
    if not path.is_file():
        raise UserError(f"event file {path} does not exist: check the path")
    reader = {".npy": _read_npy, ".npz": _read_npz, ".h5": _read_h5, ".hdf5": _read_h5,
              ".aedat": _read_aedat}[suffix]
    try:
        events, stored = reader(path)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a parser on a damaged file is the same problem
        detail = str(exc).replace(str(path), "").strip(" :'\"\n") or type(exc).__name__
        raise UserError(f"cannot read event file {path} ({detail.splitlines()[0][:120]}): replace or remove the "
                        "file") from None
    size = _resolve_size(path, events, stored, sensor_size)
    checked = check_events(events, size, f"event file {path}", size_stored=stored is not None)
    return Recording(checked, size, str(path))


def _resolve_size(path: Path, events, stored, given) -> tuple:
    if stored is not None:
        stored = sensor_dims(stored, f"the sensor size stored in {path}")
        if given is not None and not (isinstance(given, str) and given == "infer") \
                and sensor_dims(given) != stored:
            raise UserError(f"event file {path} stores a {stored[0]}x{stored[1]} sensor, not the "
                            f"{sensor_dims(given)[0]}x{sensor_dims(given)[1]} given: drop sensor_size "
                            "(--sensor-size) or fix it")
        return stored
    if isinstance(given, str) and given == "infer":
        names = getattr(events.dtype, "names", None) or ()
        if len(events) and "x" in names and "y" in names:
            return int(np.max(events["x"])) + 1, int(np.max(events["y"])) + 1
        return 1, 1  # nothing to infer from: check_events names the real problem
    if given is None:
        raise UserError(f"the sensor size of {path} is not stored in the file: pass it (--sensor-size WIDTH HEIGHT "
                        "to a training stage; sensor_size=(width, height), or \"infer\" for the largest coordinates "
                        "+ 1, in Python)")
    return sensor_dims(given)


def _read_npy(path: Path):
    return np.load(path, allow_pickle=False), None


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        size = archive["sensor_size"] if "sensor_size" in keys else None
        if "events" in keys:
            return archive["events"], size
        if set(FIELDS) <= keys:
            return _from_columns({f: archive[f] for f in FIELDS}, path), size
        missing = [f for f in FIELDS if f not in keys]
        raise UserError(f"event file {path} lacks the field(s) {', '.join(missing)} (it has "
                        f"{', '.join(sorted(keys)) or 'no arrays'}): store an 'events' structured array, or arrays "
                        "x, y, t and p")


def _from_columns(columns: dict, path: Path) -> np.ndarray:
    lengths = {len(np.ravel(v)) for v in columns.values()}
    if len(lengths) != 1:
        raise UserError(f"event file {path} has x, y, t, p of different lengths ({sorted(lengths)}): store one "
                        "value of each per event")
    dtype = np.dtype([(f, np.asarray(columns[f]).dtype) for f in FIELDS])
    events = np.empty(lengths.pop(), dtype)
    for f in FIELDS:
        events[f] = np.ravel(columns[f])
    return events


def _h5_size(*nodes):
    for node in nodes:
        if "sensor_size" in node.attrs:
            return np.asarray(node.attrs["sensor_size"])
        if "width" in node.attrs and "height" in node.attrs:
            return np.asarray([node.attrs["width"], node.attrs["height"]])
    return None


def _read_h5(path: Path):
    import h5py

    with h5py.File(path, "r") as handle:
        node = handle["events"] if "events" in handle else handle
        if isinstance(node, h5py.Dataset):  # one structured dataset
            return node[()], _h5_size(node, handle)
        present = [f for f in FIELDS if f in node and isinstance(node[f], h5py.Dataset)]
        if len(present) < len(FIELDS):
            missing = [f for f in FIELDS if f not in present]
            raise UserError(f"event file {path} lacks the dataset(s) {', '.join(missing)}: store datasets x, y, t "
                            "and p in a group 'events' (or at the file's root)")
        return _from_columns({f: node[f][()] for f in FIELDS}, path), _h5_size(node, handle)


def _read_aedat(path: Path):
    data = path.read_bytes()
    position, version = 0, None
    # jAER's header: lines starting with '#'; the first line names the version (#!AER-DAT2.0)
    while position < len(data) and data[position:position + 1] == b"#":
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end + 1
        line = data[position:end].decode("latin-1").strip()
        if line.startswith("#!AER-DAT"):
            version = line[len("#!AER-DAT"):]
        position = end
    if version is None:
        raise UserError(f"event file {path} is not AEDAT (no '#!AER-DAT' header line): replace the file, or save "
                        "the events as .npy/.npz/.h5")
    if not version.startswith("2."):
        raise UserError(f"event file {path} is AEDAT {version}, but only AEDAT 2.0 (DVS128) is read: convert it "
                        "to .npz or .h5 with x, y, t, p (e.g. with tonic or dv-processing)")
    body = data[position:]
    if len(body) % 8:
        raise UserError(f"event file {path} is truncated ({len(body)} bytes of records, not a multiple of 8): "
                        "replace the file")
    records = np.frombuffer(body, np.dtype([("address", ">u4"), ("t", ">u4")]))
    address = records["address"].astype(np.int64)
    if np.any(address >> 16):
        raise UserError(f"event file {path} has addresses wider than the DVS128's 16 bits (a DAVIS or other "
                        "sensor): convert it to .npz or .h5 with x, y, t, p")
    keep = (address & 0x8000) == 0  # bit 15: external (sync) events, not pixels
    address = address[keep]
    t = records["t"].astype(np.int64)
    # the 32-bit microsecond counter wraps after 71.6 minutes: add 2**32 after each big backwards jump
    wraps = np.concatenate([[0], np.cumsum(np.diff(t) < -(2 ** 31))])
    t = (t + wraps * 2 ** 32)[keep]
    x = 127 - ((address >> 1) & 0x7F)  # jAER mirrors the column
    y = 127 - ((address >> 8) & 0x7F)  # jAER counts rows from the bottom; rows here count from the top
    p = 1 - (address & 1)  # bit 0 set is an OFF event
    return make_events(x, y, t, p), DVS128_SIZE


def write_events(path, events: np.ndarray, sensor_size=None) -> None:
    """Write checked events atomically as ``.npz`` (``events`` and ``sensor_size``), ``.npy`` (events only)
    or ``.h5``/``.hdf5`` (group ``events`` with x, y, t, p and a ``sensor_size`` attribute)."""
    path = Path(path)
    suffix = path.suffix.lower()
    size = sensor_dims(sensor_size) if sensor_size is not None else None
    events = check_events(events, size or (2 ** 15, 2 ** 15), f"the events for {path}")

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would add ".npz" to a bare name
            extra = {"sensor_size": np.asarray(size, np.int64)} if size else {}
            np.savez_compressed(handle, events=events, **extra)

    def write_npy(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, events)

    def write_h5(tmp: Path) -> None:
        import h5py

        with h5py.File(tmp, "w") as handle:
            group = handle.create_group("events")
            for name in FIELDS:
                group.create_dataset(name, data=events[name], compression="gzip")
            if size:
                group.attrs["sensor_size"] = np.asarray(size, np.int64)

    writers = {".npz": write_npz, ".npy": write_npy, ".h5": write_h5, ".hdf5": write_h5}
    if suffix not in writers:
        raise UserError(f"cannot write events as {suffix or 'a file without extension'} ({path}): use .npz, .npy "
                        "or .h5")
    atomic_write(path, writers[suffix])


# --------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------
def frame_indices(events: np.ndarray, n_frames: int, mode: str = "time", start_us: int | None = None,
                  duration_us: int | None = None) -> np.ndarray:
    """The frame (0 .. n_frames - 1) of each event; -1 for events outside the time span.

    ``mode="time"``: ``n_frames`` equal windows over ``[start_us, start_us + duration_us)``, by default from
    the first event to the last, inclusive (frame ``(t - start) * n_frames // duration``).
    ``mode="count"``: equal numbers of events per frame, in time order (sizes differ by at most one; with
    fewer events than frames, some frames are empty).
    """
    if not (isinstance(n_frames, (int, np.integer)) and n_frames >= 1):
        raise UserError(f"the number of frames must be a whole number of at least 1, got {n_frames!r}")
    if mode not in BINNING_MODES:
        raise UserError(f"unknown binning mode {mode!r}: use one of {', '.join(BINNING_MODES)}")
    count = len(events)
    if mode == "count":
        return (np.arange(count, dtype=np.int64) * n_frames) // max(count, 1)
    if count == 0:
        return np.zeros(0, np.int64)
    t = events["t"].astype(np.int64)
    start = int(t[0]) if start_us is None else int(start_us)
    # the span includes the last event's microsecond, so the last event falls in the last frame, not past it
    span = int(t[-1]) - start + 1 if duration_us is None else int(duration_us)
    if span < 1:
        raise UserError(f"the time span of the frames must be at least 1 us, got {span}")
    index = ((t - start) * n_frames) // span
    return np.where((index >= 0) & (index < n_frames), index, -1)


def to_frames(events: np.ndarray, sensor_size, n_frames: int, mode: str = "time", start_us: int | None = None,
              duration_us: int | None = None) -> np.ndarray:
    """Bin events into ``float32 (n_frames, height, width, 2)`` counts: channel 0 OFF, channel 1 ON.

    Binning as :func:`frame_indices`; one ``np.bincount`` over all events, no loop.
    """
    width, height = sensor_dims(sensor_size)
    frame = frame_indices(events, n_frames, mode, start_us, duration_us)
    inside = frame >= 0
    flat = ((frame[inside] * height + events["y"][inside].astype(np.int64)) * width
            + events["x"][inside].astype(np.int64)) * 2 + events["p"][inside].astype(np.int64)
    counts = np.bincount(flat, minlength=n_frames * height * width * 2)
    return counts.reshape(n_frames, height, width, 2).astype(np.float32)


def accumulated_frame(events: np.ndarray, sensor_size) -> np.ndarray:
    """Every event summed into one ``float32 (height, width, 2)`` frame (OFF, ON), for training an ANN."""
    return to_frames(events, sensor_size, 1, mode="count")[0]


# --------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------
def flip_horizontal(events: np.ndarray, sensor_size) -> np.ndarray:
    """Mirror left-right: ``x -> width - 1 - x`` (a copy)."""
    width, _ = sensor_dims(sensor_size)
    flipped = events.copy()
    flipped["x"] = width - 1 - events["x"].astype(np.int64)
    return flipped


def spatial_jitter(events: np.ndarray, sensor_size, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Shift the whole recording by one random whole-pixel ``(dx, dy)`` in ``[-max_shift, max_shift]``; events
    pushed off the sensor are dropped (as a camera aimed slightly elsewhere would not see them)."""
    width, height = sensor_dims(sensor_size)
    dx, dy = rng.integers(-max_shift, max_shift + 1, size=2)
    x = events["x"].astype(np.int64) + dx
    y = events["y"].astype(np.int64) + dy
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    shifted = events[keep].copy()
    shifted["x"], shifted["y"] = x[keep], y[keep]
    return shifted


def drop_events(events: np.ndarray, rng: np.random.Generator, rate: float = 0.1) -> np.ndarray:
    """Drop each event independently with probability ``rate`` (order kept)."""
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"the event drop rate must be between 0 and 1, got {rate}")
    return events[rng.random(len(events)) >= rate]


def augment(events: np.ndarray, sensor_size, rng: np.random.Generator, flip: bool = True, max_shift: int = 2,
            drop_rate: float = 0.1) -> np.ndarray:
    """A training augmentation: a flip with probability 1/2, a spatial jitter and a random event drop, each
    switched off by ``False``/``0``; a pure function of the events and the generator's state."""
    if flip and rng.random() < 0.5:
        events = flip_horizontal(events, sensor_size)
    if max_shift:
        events = spatial_jitter(events, sensor_size, rng, max_shift)
    if drop_rate:
        events = drop_events(events, rng, drop_rate)
    return events


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
    frames = int(timesteps or config.timesteps) if config.spiking and recorded["mode"] != ACCUMULATED else None
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
    frames = int(config.timesteps) if config.spiking and mode != ACCUMULATED else None
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


# --------------------------------------------------------------------------
# Emulator
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class EmulatorSettings:
    """How :func:`emulate` turns a still image into events.

    Thresholds are changes of natural-log intensity (0.2: about 22 % brighter). Each pixel gets its own ON and
    OFF thresholds drawn once from normal distributions of standard deviation ``threshold_sigma`` (transistor
    mismatch), never below ``min_threshold``. ``noise_rate_hz`` is the background activity per pixel (events
    per second, either polarity, uniform in time). The motion visits ``waypoints`` (``(dx, dy)`` in pixels) at
    equal time intervals along straight lines; ``None`` is N-MNIST's three saccades: a triangle of side
    ``amplitude`` pixels, each side a third of ``duration_us``. The motion is sampled at ``steps`` instants;
    an event's time is interpolated within its step.
    """

    on_threshold: float = 0.2
    off_threshold: float = 0.2
    threshold_sigma: float = 0.03
    min_threshold: float = 0.01
    noise_rate_hz: float = 0.1
    duration_us: int = 300_000
    amplitude: float = 3.0
    steps: int = 300
    #: intensity (image in [0, 1]) added before the logarithm, so black pixels stay finite and quiet
    log_offset: float = 0.02
    waypoints: tuple | None = field(default=None)

    def check(self) -> None:
        """One UserError line for the first setting out of range."""
        positive = {"on_threshold": self.on_threshold, "off_threshold": self.off_threshold,
                    "min_threshold": self.min_threshold, "duration_us": self.duration_us, "steps": self.steps,
                    "log_offset": self.log_offset}
        for name, value in positive.items():
            if not (np.isfinite(value) and value > 0):
                raise UserError(f"emulator setting {name} must be above 0, got {value}")
        for name, value in {"threshold_sigma": self.threshold_sigma, "noise_rate_hz": self.noise_rate_hz,
                            "amplitude": self.amplitude}.items():
            if not (np.isfinite(value) and value >= 0):
                raise UserError(f"emulator setting {name} must be 0 or more, got {value}")
        if self.waypoints is not None and (np.ndim(self.waypoints) != 2 or np.shape(self.waypoints)[1] != 2
                                           or len(self.waypoints) < 2):
            raise UserError(f"emulator waypoints must be at least two (dx, dy) pairs, got {self.waypoints!r}")

    def path(self) -> np.ndarray:
        """The waypoints ``float (n, 2)`` of the motion."""
        if self.waypoints is not None:
            return np.asarray(self.waypoints, float)
        a = self.amplitude
        # a triangle back to the start: down-right, up-right, then straight back left
        return np.array([(0.0, 0.0), (a / 2, a * np.sqrt(3) / 2), (a, 0.0), (0.0, 0.0)])


def to_gray(image) -> np.ndarray:
    """``float64 (h, w)`` intensity in [0, 1] from a gray or RGB(A) image (uint8, or floats in [0, 1])."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        if image.shape[-1] == 1:
            image = image[..., 0]
        else:  # ITU-R 601 luma, as PIL's convert("L")
            image = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if image.ndim != 2 or min(image.shape) < 1:
        raise UserError(f"the emulator needs an image of shape (height, width) or (height, width, 1|3|4), got "
                        f"{np.shape(image)}")
    gray = image.astype(np.float64)
    if np.asarray(image).dtype == np.uint8 or gray.max() > 1.0:
        gray = gray / 255.0
    return np.clip(gray, 0.0, 1.0)


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The image moved by ``(dx, dy)`` pixels (sub-pixel: bilinear), its border pixels repeated outside."""
    height, width = image.shape
    xs, ys = np.arange(width) - dx, np.arange(height) - dy  # where each sensor pixel samples the image
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, (ys - y0)[:, None]
    c0, c1 = np.clip(x0.astype(int), 0, width - 1), np.clip(x0.astype(int) + 1, 0, width - 1)
    r0, r1 = np.clip(y0.astype(int), 0, height - 1), np.clip(y0.astype(int) + 1, 0, height - 1)
    top = image[r0][:, c0] * (1 - fx) + image[r0][:, c1] * fx
    bottom = image[r1][:, c0] * (1 - fx) + image[r1][:, c1] * fx
    return top * (1 - fy) + bottom * fy


def _crossings(level_now, level_before, reference, thresholds, sign: int, t_before: float, dt: float):
    """Events of one polarity in one step: pixels, times and the references' new values (vectorised; a pixel
    that crossed k thresholds in the step emits k events at the interpolated crossing times)."""
    change = sign * (level_now - reference)
    counts = np.floor(change / thresholds).astype(np.int64)
    pixels = np.flatnonzero(counts > 0)
    counts = counts[pixels]
    if not len(pixels):
        return pixels, np.zeros(0), reference
    each = np.repeat(pixels, counts)
    # k = 1 .. counts for each pixel's events
    k = np.arange(len(each)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    crossing = reference[each] + sign * k * thresholds[each]
    moved = level_now[each] - level_before[each]
    fraction = np.clip((crossing - level_before[each]) / np.where(moved == 0, 1, moved), 0.0, 1.0)
    reference = reference.copy()
    reference[pixels] += sign * counts * thresholds[pixels]
    return each, t_before + fraction * dt, reference


def emulate(image, settings: EmulatorSettings = EmulatorSettings(), seed=0) -> np.ndarray:
    """Events of :data:`EVENT_DTYPE` from a still ``image`` moved as ``settings`` say; the sensor is the
    image's ``(width, height)``. ``seed``: an int or a ``np.random.Generator``; the result depends only on the
    image, the settings and the seed.

    Each pixel keeps a reference log intensity (its value at its last event, or at the start). At every step,
    a change of at least the pixel's ON (OFF) threshold above (below) the reference gives ON (OFF) events, one
    per threshold crossed, timed by linear interpolation within the step; the reference moves by the
    thresholds crossed. Background noise events are added uniformly over pixels and time.
    """
    settings.check()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    gray = to_gray(image)
    height, width = gray.shape
    pixels = height * width
    thresholds = {sign: np.maximum(rng.normal(base, settings.threshold_sigma, pixels), settings.min_threshold)
                  if settings.threshold_sigma > 0 else np.full(pixels, float(base))
                  for sign, base in ((1, settings.on_threshold), (-1, settings.off_threshold))}
    path = settings.path()
    times = np.linspace(0.0, settings.duration_us, settings.steps + 1)
    legs = np.linspace(0.0, settings.duration_us, len(path))
    dxs, dys = np.interp(times, legs, path[:, 0]), np.interp(times, legs, path[:, 1])

    def log_frame(step: int) -> np.ndarray:
        return np.log(_shifted(gray, dxs[step], dys[step]) + settings.log_offset).ravel()

    before = log_frame(0)
    reference = before.copy()
    found = []  # (pixels, times, polarity) per step and polarity
    dt = settings.duration_us / settings.steps
    for step in range(1, settings.steps + 1):  # a loop over time steps; every pixel at once within a step
        now = log_frame(step)
        for sign, polarity in ((1, 1), (-1, 0)):
            where, when, reference = _crossings(now, before, reference, thresholds[sign], sign, times[step - 1], dt)
            if len(where):
                found.append((where, when, polarity))
        before = now
    noise = rng.poisson(settings.noise_rate_hz * pixels * settings.duration_us * 1e-6)
    if noise:
        found.append((rng.integers(0, pixels, noise), rng.uniform(0, settings.duration_us, noise),
                      rng.integers(0, 2, noise)))
    if not found:
        return np.zeros(0, EVENT_DTYPE)
    where = np.concatenate([f[0] for f in found])
    when = np.round(np.concatenate([f[1] for f in found])).astype(np.int64)
    polarity = np.concatenate([np.broadcast_to(f[2], len(f[0])) for f in found])
    order = np.argsort(when, kind="stable")
    return make_events(where[order] % width, where[order] // width, when[order], polarity[order])


def load_gray_image(path, size: int | None = None) -> np.ndarray:
    """A gray ``float64 (h, w)`` image in [0, 1] from a file (PIL), resized to ``size x size`` (bilinear,
    antialiased) if ``size``; one UserError line naming a file PIL cannot read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            gray = opened.convert("L")
            if size:
                gray = gray.resize((size, size), Image.BILINEAR)
            return np.asarray(gray, np.float64) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        detail = str(exc).replace(str(path), "").strip(" :'\"") or type(exc).__name__
        raise UserError(f"cannot read image {path} ({detail[:120]}): replace or remove the file") from None


def write_emulated_dataset(image_root, out, settings: EmulatorSettings = EmulatorSettings(), size: int | None = None,
                           seed: int = 0, limit_per_class: int | None = None, overwrite: bool = False,
                           log: Callable[[str], None] | None = None) -> dict:
    """Emulate every image of ``image_root/<class>/<image>`` into ``out/<class>/<image stem>.npz`` (events and
    sensor size, :func:`write_events`) plus ``out/emulator.json`` (settings, seed, counts).

    Recording ``i`` (in the image folder's sorted order) is seeded with ``(seed, i)``, so each recording is the
    same whatever ``limit_per_class`` keeps. The dataset is built in a hidden folder beside ``out`` and renamed
    into place at the end: ``out`` holds either the whole dataset or what it held before (a killed run leaves
    only the hidden ``.<name>.partial-*`` folder, which can be deleted). A non-empty ``out`` is refused unless
    ``overwrite``. Returns the summary written to ``emulator.json``.
    """
    settings.check()
    out = Path(out)
    image_root = Path(image_root)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file, not a folder: choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} is not empty: choose another output folder, or pass overwrite=True "
                        "(--overwrite) to replace it")
    if out.resolve().is_relative_to(image_root.resolve()):
        raise UserError(f"output folder {out} is inside the image folder {image_root}: it would become a class; "
                        "write it elsewhere")
    if limit_per_class is not None and limit_per_class < 1:
        raise UserError(f"limit per class must be at least 1, got {limit_per_class}")
    source = data.scan_folder(image_root)
    if source.layout is not None:
        raise UserError(f"{image_root} holds multi-band images ({source.layout.describe()}): the emulator reads "
                        "RGB or gray images")
    chosen, per_class = [], {}
    for index, (item, label) in enumerate(zip(source.items, source.labels)):
        per_class[label] = per_class.get(label, 0) + 1
        if limit_per_class is None or per_class[label] <= limit_per_class:
            chosen.append((index, item, int(label)))
    stems = [str(Path(item).with_suffix("")) for _, item, _ in chosen]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})[0]
        raise UserError(f"two images of {image_root} share the name {twice} (different extensions): rename one")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    counts, empty = [], []
    try:
        for done, ((index, item, label), stem) in enumerate(zip(chosen, stems)):
            gray = load_gray_image(image_root / item, size)
            events = emulate(gray, settings, np.random.default_rng([seed, index]))
            if not len(events):  # a blank image without noise: a recording without events would be refused
                empty.append(item)
                continue
            write_events(partial / f"{stem}.npz", events, (gray.shape[1], gray.shape[0]))
            counts.append(len(events))
            if log and (done + 1) % 50 == 0:
                log(f"{done + 1}/{len(chosen)} images emulated")
        if empty and log:
            log(f"warning: {len(empty)} image(s) gave no events and were left out (first: {empty[0]}): raise "
                "amplitude or noise_rate_hz, or lower the thresholds")
        summary = {"images": str(image_root), "recordings": len(counts), "classes": len(source.classes),
                   "left_out_without_events": empty, "size": size, "seed": seed, "limit_per_class": limit_per_class,
                   "settings": {k: (list(map(list, v)) if k == "waypoints" and v is not None else v)
                                for k, v in asdict(settings).items()},
                   "events_per_recording": {"mean": float(np.mean(counts)) if counts else 0.0,
                                            "min": int(min(counts, default=0)), "max": int(max(counts, default=0))}}
        atomic_write_json(partial / "emulator.json", summary)
        _replace_folder(partial, out)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return summary


def _replace_folder(new: Path, out: Path) -> None:
    """Move ``new`` to ``out`` by renames: an existing ``out`` is set aside first and deleted after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old)

"""Event recordings: the structured array of events, its checks, and the files it is read from and written to.

*Events* are a NumPy structured array of :data:`EVENT_DTYPE`, the layout tonic uses::

    x: int16   column, 0 .. width - 1, left to right
    y: int16   row,    0 .. height - 1, top to bottom (image convention)
    t: int64   time in microseconds, sorted (non-decreasing)
    p: int8    polarity: 1 = ON (brighter), 0 = OFF (darker)

A *sensor size* is ``(width, height)`` (tonic's order, without its polarity count; a tonic-style
``(width, height, 2)`` is accepted too).

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
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoints import atomic_write
from ..errors import UserError

#: The structured dtype of events (tonic's fields; polarity as 0/1 int8).
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
FIELDS = ("x", "y", "t", "p")
EVENT_EXTENSIONS = (".npy", ".npz", ".h5", ".hdf5", ".aedat")
#: The DVS128's sensor (width, height), the only AEDAT 2.0 sensor read.
DVS128_SIZE = (128, 128)


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


"""Binning events into frames a Keras network can read, and augmentations of events.

Frames are channels last, as Keras wants: :func:`to_frames` returns ``float32 (T, height, width, 2)`` of event
counts, channel 0 counting OFF events and channel 1 ON events (channel index = polarity value);
:func:`accumulated_frame` returns ``(height, width, 2)``.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from .recordings import sensor_dims

BINNING_MODES = ("time", "count")


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


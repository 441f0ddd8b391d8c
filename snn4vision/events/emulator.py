"""An emulator that turns still images into event recordings.

It makes recordings the way N-MNIST, N-Caltech101 and ES-ImageNet were made from still images (:func:`emulate`):
the image moves in small saccades and each pixel emits an event whenever its log intensity has changed by a
contrast threshold since its last event. :func:`write_emulated_dataset` turns an image folder into an event
dataset of ``.npz`` files.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import data
from ..checkpoints import atomic_write_json
from ..errors import UserError
from .recordings import EVENT_DTYPE, make_events, write_events

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

"""Binning speed of :func:`snn4vision.events.to_frames` (T = 16 frames, by time and by event count) at 64 x 64
and 128 x 128, as ratios against two baselines measured in the same run on the same machine:

- reading the same recordings from disk (:func:`snn4vision.events.read_events` of compressed ``.npz`` files as
  :func:`~snn4vision.events.write_events` writes them, checks included): how binning compares with the I/O it
  follows;
- a naive per-event Python loop (``frames[k, y, x, p] += 1`` per event) on a sample of the events: what the
  vectorised ``np.bincount`` saves.

Recordings are synthetic (uniform pixels and polarities, sorted times over 300 ms, ``--events`` per recording),
so the figures depend only on the event count and sensor size. Each timing is the median of ``--repeats``.
Not a timed assertion: a measurement to read.

Usage: ``.venv/bin/python benchmarks/event_binning.py [--events 100000] [--recordings 10] [--repeats 15]``;
writes ``benchmarks/results/event_binning.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snn4vision import events  # noqa: E402  (after the path is set, so the checkout's package is used)

FRAMES = 16


def synthetic(count: int, side: int, rng: np.random.Generator) -> np.ndarray:
    return events.make_events(rng.integers(0, side, count), rng.integers(0, side, count),
                              np.sort(rng.integers(0, 300_000, count)), rng.integers(0, 2, count))


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up: first allocations, imports
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def naive_frames(recording: np.ndarray, side: int, n_frames: int) -> np.ndarray:
    """The baseline: time binning one event at a time in Python."""
    frames = np.zeros((n_frames, side, side, 2), np.float32)
    t0 = int(recording["t"][0])
    span = int(recording["t"][-1]) - t0 + 1
    for x, y, t, p in recording.tolist():
        frames[(t - t0) * n_frames // span, y, x, p] += 1
    return frames


def measure(side: int, count: int, recordings: int, repeats: int, sample: int, folder: Path) -> dict:
    rng = np.random.default_rng(side)
    data = [synthetic(count, side, rng) for _ in range(recordings)]
    paths = []
    for i, recording in enumerate(data):
        paths.append(folder / f"{side}_{i}.npz")
        events.write_events(paths[-1], recording, (side, side))
    sensor = (side, side)
    total = count * recordings
    read_s = median_seconds(lambda: [events.read_events(p) for p in paths], repeats)
    time_s = median_seconds(lambda: [events.to_frames(r, sensor, FRAMES, "time") for r in data], repeats)
    count_s = median_seconds(lambda: [events.to_frames(r, sensor, FRAMES, "count") for r in data], repeats)
    accumulated_s = median_seconds(lambda: [events.accumulated_frame(r, sensor) for r in data], repeats)
    small = data[0][:sample]
    np.testing.assert_array_equal(naive_frames(small, side, FRAMES), events.to_frames(small, sensor, FRAMES))
    naive_s = median_seconds(lambda: naive_frames(small, side, FRAMES), max(1, repeats // 2))
    naive_rate = sample / naive_s
    row = {"sensor": f"{side}x{side}", "events_per_recording": count, "recordings": recordings,
           "read_events_per_s": total / read_s}
    for mode, seconds in (("time", time_s), ("count", count_s), ("accumulated", accumulated_s)):
        frames = recordings * (1 if mode == "accumulated" else FRAMES)
        row[mode] = {"events_per_s": total / seconds, "frames_per_s": frames / seconds,
                     "recordings_per_s": recordings / seconds,
                     "x_faster_than_reading": read_s / seconds,
                     "x_faster_than_naive_loop": (total / seconds) / naive_rate}
    row["naive_loop_events_per_s"] = naive_rate
    return row


def markdown(rows: list, args) -> str:
    lines = [
        "# Event binning speed (issue 32)",
        "",
        f"`benchmarks/event_binning.py --events {args.events} --recordings {args.recordings} --repeats "
        f"{args.repeats}`: synthetic recordings of {args.events:,} events over 300 ms, binned into T = {FRAMES} "
        "frames `(T, height, width, 2)`. Ratios compare with baselines timed in the same run: reading the same "
        "recordings from compressed `.npz` (checks included), and a per-event Python loop on a "
        f"{args.sample:,}-event sample. Medians of {args.repeats} runs, one process, "
        f"{platform.processor() or platform.machine()}, NumPy {np.__version__}.",
        "",
        "| sensor | binning | events/s | frames/s | x faster than reading | x faster than a Python loop |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        for mode in ("time", "count", "accumulated"):
            m = row[mode]
            label = f"{mode} (T={FRAMES})" if mode != "accumulated" else "accumulated (1 frame)"
            lines.append(f"| {row['sensor']} | {label} | {m['events_per_s']:.3g} | {m['frames_per_s']:.3g} | "
                         f"{m['x_faster_than_reading']:.1f} | {m['x_faster_than_naive_loop']:.0f} |")
    lines += ["", "Baselines: "
              + "; ".join(f"{row['sensor']}: reading {row['read_events_per_s']:.3g} events/s, Python loop "
                          f"{row['naive_loop_events_per_s']:.3g} events/s" for row in rows) + ".",
              "", "The frames of the loop and of `to_frames` are checked equal on the sample before timing. "
              "Frames per second count output frames (T per recording). Machine load from other work changes "
              "the absolute figures; the ratios, timed together, move less."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per recording")
    parser.add_argument("--recordings", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sample", type=int, default=20_000, help="events the Python loop bins")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "event_binning.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [measure(side, args.events, args.recordings, args.repeats, args.sample, Path(scratch))
                for side in (64, 128)]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(rows, args))
    output.with_suffix(".json").write_text(json.dumps({"frames": FRAMES, "events": args.events,
                                                       "recordings": args.recordings, "repeats": args.repeats,
                                                       "sample": args.sample, "rows": rows}, indent=2) + "\n")
    print(markdown(rows, args))


if __name__ == "__main__":
    main()

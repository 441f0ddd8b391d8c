"""Turn an image folder (``<folder>/<class>/<image>``, e.g. ../shared/data/ucmerced) into an event dataset of
emulated DVS recordings (``<out>/<class>/<image stem>.npz``), with :func:`snn4vision.events.write_emulated_dataset`.

Usage::

    .venv/bin/python benchmarks/event_dataset.py --out /tmp/ucm_events --size 64 --limit-per-class 5
    .venv/bin/python benchmarks/event_dataset.py ../shared/data/ucmerced --out DIR --size 64 --on-threshold 0.15

Prints one line per 50 images and a summary (recordings, events per recording, seconds). A non-empty ``--out``
is refused unless ``--overwrite``. Problems with the input are one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snn4vision import events  # noqa: E402  (after the path is set, so the checkout's package is used)
from snn4vision.errors import UserError  # noqa: E402

DEFAULTS = events.EmulatorSettings()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="?", default=str(ROOT.parent / "shared" / "data" / "ucmerced"),
                   help="image folder laid out as <folder>/<class>/<image> (default: ../shared/data/ucmerced)")
    p.add_argument("--out", required=True, help="output folder (new or empty, or with --overwrite)")
    p.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE first (e.g. 64)")
    p.add_argument("--limit-per-class", type=int, default=None, help="emulate only the first N images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--on-threshold", type=float, default=DEFAULTS.on_threshold,
                   help="ON contrast threshold, log intensity (default %(default)s)")
    p.add_argument("--off-threshold", type=float, default=DEFAULTS.off_threshold,
                   help="OFF contrast threshold, log intensity (default %(default)s)")
    p.add_argument("--threshold-sigma", type=float, default=DEFAULTS.threshold_sigma,
                   help="per-pixel threshold mismatch, standard deviation (default %(default)s)")
    p.add_argument("--noise-rate", type=float, default=DEFAULTS.noise_rate_hz,
                   help="background events per pixel per second (default %(default)s)")
    p.add_argument("--duration-ms", type=float, default=DEFAULTS.duration_us / 1000,
                   help="recording length, three saccades (default %(default)s)")
    p.add_argument("--amplitude", type=float, default=DEFAULTS.amplitude,
                   help="side of the saccade triangle in pixels (default %(default)s)")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps,
                   help="motion samples over the recording (default %(default)s)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    settings = events.EmulatorSettings(
        on_threshold=args.on_threshold, off_threshold=args.off_threshold, threshold_sigma=args.threshold_sigma,
        noise_rate_hz=args.noise_rate, duration_us=int(round(args.duration_ms * 1000)), amplitude=args.amplitude,
        steps=args.steps)
    began = time.perf_counter()
    try:
        summary = events.write_emulated_dataset(args.images, args.out, settings, size=args.size, seed=args.seed,
                                                limit_per_class=args.limit_per_class, overwrite=args.overwrite,
                                                log=lambda line: print(line, flush=True))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - began
    per = summary["events_per_recording"]
    print(f"{summary['recordings']} recordings of {summary['classes']} classes in {args.out} ({seconds:.1f} s): "
          f"{per['mean']:.0f} events per recording on average ({per['min']} .. {per['max']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

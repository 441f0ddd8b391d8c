"""Benchmark: training images/s of the VGG-16 with QCFS against the same network with ReLU.

Usage: python benchmarks/qcfs_training.py [--width 0.25 0.5] [--image-size 64] [--batch-size 32] [--steps 8]

In one run, on random images, for each width: the same VGG-16 (BatchNorm, 21 classes) with ReLU (the
baseline) and with QCFS at L = 4 (as shipped: the op-by-op definition with a straight-through floor). One
discarded warm-up step, then ``--steps`` timed training steps (Adam), best of three repeats.
Results go to benchmarks/results/qcfs_training.{json,md}.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snn4vision  # noqa: E402,F401

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from snn4vision import models  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def images_per_second(model, images, labels, steps: int) -> float:
    model.compile(tf.keras.optimizers.Adam(1e-3), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(images, labels)  # trace and warm up
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(images, labels)
        best = min(best, time.perf_counter() - began)
    return steps * len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.random((args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    labels = rng.integers(0, 21, args.batch_size)
    rows = []
    for width in args.width:
        speed = {}
        for activation in ("relu", "qcfs"):
            model = models.vgg16(21, args.image_size, width, True, seed=0, activation=activation, levels=4)
            speed[activation] = images_per_second(model, images, labels, args.steps)
            print(f"width {width} {activation}: {speed[activation]:.1f} training images/s", flush=True)
        rows.append({"width": width, "images_per_s": speed, "qcfs_over_relu": speed["qcfs"] / speed["relu"]})
    result = {"image_size": args.image_size, "batch_size": args.batch_size, "steps": args.steps,
              "cpu_count": os.cpu_count(), "machine": platform.machine(), "tensorflow": tf.__version__, "rows": rows}
    lines = [f"# VGG-16 training with QCFS vs ReLU, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
             f"{os.cpu_count()} CPU cores", "",
             "| width | ReLU img/s | QCFS img/s | QCFS / ReLU |", "|---|---|---|---|"]
    for r in rows:
        v = r["images_per_s"]
        lines.append(f"| {r['width']} | {v['relu']:.1f} | {v['qcfs']:.1f} | {r['qcfs_over_relu']:.2f}x |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "qcfs_training.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "qcfs_training.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

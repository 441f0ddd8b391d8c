"""Benchmark: ANN vs naive keras-spiking SNN vs our step-major simulator (same weights, same seeds).

Usage: python benchmarks/snn_inference.py --run RUN_DIR [--timesteps 8 32] [--images 64] [--extra-runs RUN...]

RUN_DIR must hold a converted SNN (pipelines/convert_snn.py). Reports images/s of
each, the dense floor (ANN images/s / T), whether naive and ours agree, and,
from conversion.json / fine_tune.json, the smallest T at which each SNN comes
within 1 and 3 points of the ANN with the time per image at that T. Each of
--extra-runs (copies of RUN_DIR's ANN converted or fine-tuned with other
settings) adds its curves. Results go to benchmarks/results/snn_inference.{json,md}.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snn4vision  # noqa: E402,F401

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from snn4vision import data  # noqa: E402
from snn4vision.rundir import load_ann, load_snn  # noqa: E402
from snn4vision.simulation import keras_spiking_model  # noqa: E402
from snn4vision.rundir import open_run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def images_per_second(fn, batches, repeats=5):
    fn(batches[0])  # trace / warm up
    best = 0.0
    for _ in range(repeats):
        began = time.perf_counter()
        for batch in batches:
            np.asarray(fn(batch))
        best = max(best, sum(len(b) for b in batches) / (time.perf_counter() - began))
    return best


def smallest_t(rows, ann_accuracy, points):
    for row in rows:
        if row["accuracy"] >= ann_accuracy - points / 100:
            return row["timesteps"]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--extra-runs", nargs="*", default=[])
    args = parser.parse_args()
    run_dir = Path(args.run)
    run = open_run(run_dir)
    ann = load_ann(run_dir, run.config, len(run.classes))
    test = run.decoded("test").take(args.images)
    batches = [x for x, _ in data.evaluation_batches(test, args.batch_size)]
    ann_fn = tf.function(lambda x: ann(x, training=False))
    ann_ips = images_per_second(ann_fn, batches)
    rows = []
    for t in args.timesteps:
        snn = load_snn(run_dir, timesteps=t)
        naive = keras_spiking_model(snn, t)
        naive_fn = tf.function(lambda x: naive(tf.repeat(x[:, None], t, axis=1), training=False))
        ours_fn = tf.function(lambda x: snn.simulate(x, t)["logits"])
        ours_logits = np.concatenate([ours_fn(b).numpy() for b in batches])
        naive_logits = np.concatenate([naive_fn(b).numpy() for b in batches])
        row = {"timesteps": t, "ann_images_per_s": ann_ips, "floor_images_per_s": ann_ips / t,
               "naive_images_per_s": images_per_second(naive_fn, batches),
               "ours_images_per_s": images_per_second(ours_fn, batches),
               "max_abs_logit_difference": float(np.abs(ours_logits - naive_logits).max()),
               "same_predictions": float(np.mean(ours_logits.mean(1).argmax(1) == naive_logits.mean(1).argmax(1)))}
        row["speedup_vs_naive"] = row["ours_images_per_s"] / row["naive_images_per_s"]
        row["fraction_of_floor"] = row["ours_images_per_s"] / row["floor_images_per_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    # seconds per image and timestep of each simulator, averaged over the measured T
    per_step_s = {name: float(np.mean([1.0 / (r[f"{name}_images_per_s"] * r["timesteps"]) for r in rows]))
                  for name in ("naive", "ours")}
    cost = {}
    directories = [run_dir] + [Path(r) for r in args.extra_runs]
    conversions = [json.loads((directory / "conversion.json").read_text()) for directory in directories]
    ann_accuracy = conversions[0]["ann_test_accuracy"]
    curves = {}
    for i, (directory, conversion) in enumerate(zip(directories, conversions)):
        if conversion["ann_test_accuracy"] != ann_accuracy:
            raise SystemExit(f"{directory} converts another ANN than {run_dir}")
        prefix = "" if i == 0 else f"{directory.name}: "
        # SNN4Space's path: no normalisation, simulated with keras-spiking layers; ours: everything else.
        for v in conversion["variants"]:
            curves[f"{prefix}converted ({v['name']}, tau {v['tau']})"] = (
                "naive" if v["name"] == "no normalisation" else "ours", v["by_timesteps"])
        if (directory / "fine_tune.json").exists():
            curves[f"{prefix}fine-tuned"] = ("ours", json.loads((directory / "fine_tune.json").read_text())["results"])
    for name, (engine, curve) in curves.items():
        cost[name] = {"simulator": engine}
        for p in (1, 3):
            t = smallest_t(curve, ann_accuracy, p)
            cost[name][f"T_within_{p}_points"] = t
            cost[name][f"ms_per_image_within_{p}_points"] = None if t is None else 1000 * t * per_step_s[engine]
    result = {"run": str(run_dir), "device": "CPU", "threads": tf.config.threading.get_intra_op_parallelism_threads(),
              "images": args.images, "batch_size": args.batch_size, "ann_test_accuracy": ann_accuracy,
              "throughput": rows, "cost_of_accuracy": cost,
              "note": "ms per image = T x the simulator's measured seconds per image and step"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "snn_inference.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# SNN inference benchmark", "", f"Run `{run_dir}`, {args.images} test images, batch {args.batch_size}, CPU.",
             "", "| T | ANN img/s | floor (ANN/T) | naive keras-spiking | ours | ours/naive | ours/floor | same predictions |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['timesteps']} | {r['ann_images_per_s']:.1f} | {r['floor_images_per_s']:.2f} | "
                     f"{r['naive_images_per_s']:.2f} | {r['ours_images_per_s']:.2f} | {r['speedup_vs_naive']:.2f}x | "
                     f"{r['fraction_of_floor']:.0%} | {r['same_predictions']:.0%} |")
    lines += ["", f"ANN test accuracy {ann_accuracy:.3f}.", "",
              "| SNN | simulator | T within 1 pt | ms/image | T within 3 pt | ms/image |", "|---|---|---|---|---|---|"]

    def cell(value, fmt):
        return "not reached" if value is None else format(value, fmt)

    for name, c in cost.items():
        lines.append(f"| {name} | {c['simulator']} | {cell(c['T_within_1_points'], 'd')} | "
                     f"{cell(c['ms_per_image_within_1_points'], '.1f')} | {cell(c['T_within_3_points'], 'd')} | "
                     f"{cell(c['ms_per_image_within_3_points'], '.1f')} |")
    (RESULTS / "snn_inference.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

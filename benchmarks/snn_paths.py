"""Benchmark: accuracy, time per image and SOPs per image of each SNN path over T.

Usage:
  python benchmarks/snn_paths.py --relu-run RUN_A [--fine-tuned-run RUN_F] --qcfs-run RUN_B

RUN_A: a ReLU run converted with normalisation (convert_snn.py); RUN_F: a run
whose fine-tuned SNN to compare (fine_tune.py; default RUN_A if it has one);
RUN_B: a QCFS run (train_ann.py --activation qcfs) converted with convert_snn.py.
All must share the split. Each SNN is simulated on the whole test split at every
T in 1, 2, 4, ..., --max-timesteps (timed separately), and its synaptic
operations per image are counted from the measured spikes (snn4vision.stages.energy).
Results: benchmarks/results/snn_paths.{json,md}.
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

from snn4vision import costs, data  # noqa: E402
from snn4vision.stages.convert import timestep_grid  # noqa: E402
from snn4vision.evaluation import layer_spikes, readout_accuracy, readout_steps  # noqa: E402
from snn4vision.rundir import FINE_TUNED_CONFIG, load_ann, load_fine_tuned, load_snn, open_run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def ann_accuracy(run_dir, run, batches, labels):
    ann = load_ann(run_dir, run.config, len(run.classes))
    logits = np.concatenate([ann(x, training=False).numpy() for x, _ in batches])
    return float(np.mean(logits.argmax(axis=1) == labels))


def snn_rows(snn, batches, labels, grid, fraction):
    rows = []
    for t in grid:
        simulate = tf.function(lambda x, t=t: snn.simulate(x, t))
        simulate(next(iter(batches))[0])  # trace
        began = time.perf_counter()
        outputs = [simulate(x) for x, _ in batches]
        seconds = time.perf_counter() - began
        logits = np.concatenate([o["logits"].numpy() for o in outputs])
        spikes = layer_spikes(np.concatenate([o["spikes"].numpy() for o in outputs]))
        _, ops, _ = costs.activity_costs(snn.activity(spikes, t), t)
        rows.append({"timesteps": t, "accuracy": readout_accuracy(logits, labels, readout_steps(t, fraction)),
                     "ms_per_image": 1000 * seconds / len(labels), "sops_per_image": sum(o["sops"] for o in ops),
                     "first_layer_macs": sum(o["macs"] for o in ops), "spikes_per_image": float(spikes.sum())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def time_to_accuracy(paths: dict, step: float = 0.05) -> list:
    """For accuracy levels 0.50, 0.55, ... up to the best any path reaches: the smallest T (and its time per
    image) at which each path reaches the level, and the fastest keras-spiking path's time over the fastest
    QCFS path's."""
    best = max(r["accuracy"] for rows in paths.values() for r in rows)
    table = []
    for level in np.arange(0.5, best + 1e-9, step):
        reached = {name: next(({"timesteps": r["timesteps"], "ms_per_image": r["ms_per_image"]}
                               for r in rows if r["accuracy"] >= level - 1e-9), None)
                   for name, rows in paths.items()}

        def fastest(kind):
            times = [v["ms_per_image"] for name, v in reached.items() if v and kind in name]
            return min(times) if times else None

        keras_spiking, qcfs = fastest("keras-spiking"), fastest("QCFS")
        table.append({"accuracy": round(float(level), 2), "paths": reached,
                      "keras_spiking_over_qcfs": keras_spiking / qcfs if keras_spiking and qcfs else None})
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relu-run", required=True)
    parser.add_argument("--fine-tuned-run")
    parser.add_argument("--qcfs-run", required=True)
    parser.add_argument("--max-timesteps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    relu_dir, qcfs_dir = Path(args.relu_run), Path(args.qcfs_run)
    fine_dir = Path(args.fine_tuned_run) if args.fine_tuned_run else relu_dir
    relu, qcfs = open_run(relu_dir), open_run(qcfs_dir)
    if relu.manifest["test"] != qcfs.manifest["test"]:
        raise SystemExit("the two runs have different test splits: train them with the same data and --seed")
    labels = relu.labels("test")
    batches = list(data.evaluation_batches(relu.decoded("test"), args.batch_size))
    grid = timestep_grid(args.max_timesteps)
    result = {"relu_ann_accuracy": ann_accuracy(relu_dir, relu, batches, labels),
              "qcfs_ann_accuracy": ann_accuracy(qcfs_dir, qcfs, batches, labels),
              "test_images": int(len(labels)), "threads": "2 CPU cores", "paths": {},
              "relu_conversion": json.loads((relu_dir / "conversion.json").read_text())["config"]}
    relu_fraction = result["relu_conversion"]["readout_fraction"] or 0.5
    paths = [("keras-spiking conversion (normalised)", load_snn(relu_dir), relu_fraction),
             ("QCFS SNN (signed IF neurons, bursts of up to 2)", load_snn(qcfs_dir, neuron="signed_if", max_spikes=2),
              1.0),
             ("QCFS SNN (signed IF neurons)", load_snn(qcfs_dir, neuron="signed_if", max_spikes=1), 1.0),
             ("QCFS SNN (plain IF neurons)", load_snn(qcfs_dir, neuron="if", max_spikes=1), 1.0)]
    if (fine_dir / FINE_TUNED_CONFIG).exists():
        fine_fraction = json.loads((fine_dir / "fine_tune.json").read_text())["config"]["readout_fraction"]
        paths.insert(1, ("fine-tuned keras-spiking SNN", load_fine_tuned(fine_dir), fine_fraction))
        result["fine_tuned_from"] = {"run": str(fine_dir), "ann_test_accuracy": json.loads(
            (fine_dir / "conversion.json").read_text())["ann_test_accuracy"]}
    for name, snn, fraction in paths:
        print(f"== {name}", flush=True)
        result["paths"][name] = snn_rows(snn, batches, labels, grid, fraction)
    result["time_to_accuracy"] = time_to_accuracy(result["paths"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "snn_paths.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# SNN paths on UC Merced (quick preset, same split)", "",
             f"ReLU ANN test accuracy {result['relu_ann_accuracy']:.3f}; QCFS ANN {result['qcfs_ann_accuracy']:.3f} "
             f"({result['test_images']} test images, 2 CPU cores).", "",
             "keras-spiking conversion: " + ", ".join(f"{k} {result['relu_conversion'][k]}" for k in
                                                      ("tau", "dt", "percentile", "max_rate", "readout_fraction")) +
             " (None: no synapse / 1/dt / the default)." + (
                 f" The fine-tuned SNN comes from `{result['fine_tuned_from']['run']}`, whose ANN has test accuracy "
                 f"{result['fine_tuned_from']['ann_test_accuracy']:.3f}." if "fine_tuned_from" in result else ""), "",
             "| SNN path | T | accuracy | ms/image | SOPs/image | spikes/image |", "|---|---|---|---|---|---|"]
    for name, rows in result["paths"].items():
        for r in rows:
            lines.append(f"| {name} | {r['timesteps']} | {r['accuracy']:.3f} | {r['ms_per_image']:.1f} | "
                         f"{r['sops_per_image']:.3g} | {r['spikes_per_image']:.3g} |")
    names = list(result["paths"])
    lines += ["", "Smallest T (ms per image) at which each path reaches an accuracy; the last column is the fastest "
                  "keras-spiking path's time over the fastest QCFS path's:", "",
              "| accuracy | " + " | ".join(names) + " | keras-spiking / QCFS |",
              "|---" * (len(names) + 2) + "|"]
    for row in result["time_to_accuracy"]:
        cells = [f"T={v['timesteps']} ({v['ms_per_image']:.1f})" if v else "not reached"
                 for v in row["paths"].values()]
        ratio = row["keras_spiking_over_qcfs"]
        lines.append(f"| {row['accuracy']:.2f} | " + " | ".join(cells) + " | "
                     + (f"{ratio:.1f}x" if ratio else "n/a") + " |")
    (RESULTS / "snn_paths.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

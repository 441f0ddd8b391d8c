"""Benchmark: SNN4Space's low-pass path before and after the snn4space fine-tuning recipe.

Usage:
  python benchmarks/snn4space_recipe.py --run RUN_DIR

RUN_DIR: a ReLU run converted with ``convert_snn.py --dt 1 --tau 0.1 --max-rate 4000`` and fine-tuned with
``fine_tune.py --recipe snn4space``. Reports the fine-tuning trace (dt, mean tau, accuracy per stage), then
accuracy, spikes and energy per inference (loihi, 45nm) at T = 1, 2, 4, ..., 32 with dt = 1 ms for:
- the low-pass conversion as it was before the recipe (dt 1 ms, tau 0.1 s, one spike per step at the 99.9th
  percentile);
- the conversion at the recipe's end point without fine-tuning (dt 1 ms, tau 1 ms, 4000 Hz at the percentile);
- the fine-tuned SNN.
Results: benchmarks/results/snn4space_recipe.{json,md}.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snn4vision  # noqa: E402,F401

from snn4vision import costs  # noqa: E402
from snn4vision.checkpoints import read_json  # noqa: E402
from snn4vision.stages.convert import ConvertConfig, build_snn, timestep_grid  # noqa: E402
from snn4vision.evaluation import (ann_accuracy, layer_spikes, readout_accuracy, readout_steps,  # noqa: E402
                                   simulate_split)
from snn4vision.rundir import load_ann, load_fine_tuned, open_run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEVICES = ("loihi", "45nm")


def rows_by_timesteps(snn, batches, labels, grid, fraction, devices) -> list:
    """Accuracy, spikes and joules per image at every T of ``grid``, from one simulation of max(grid) steps."""
    result = simulate_split(snn, batches, max(grid))
    rows = []
    for t in grid:
        spikes = layer_spikes(result["spikes"][:, :t])
        layers, operations, _ = costs.activity_costs(snn.activity(spikes, t), t)
        accuracy = readout_accuracy(result["logits"][:, :t], labels, readout_steps(t, fraction))
        row = {"timesteps": t, "accuracy": accuracy,
               "spikes_per_image": float(spikes.sum()), "sop_per_mac": costs.sop_per_mac(operations, layers)}
        for name in DEVICES:
            row[f"snn_J_{name}"] = float(sum(costs.snn_energy(operations, devices[name])))
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--max-timesteps", type=int, default=32)
    args = parser.parse_args()
    run_dir = Path(args.run)
    run = open_run(run_dir)
    labels = run.labels("test")
    batches = run.batches("test", 64)
    devices = costs.load_devices()
    ann = load_ann(run_dir, run.config, len(run.classes))
    tuned = load_fine_tuned(run_dir)
    layers = tuned.layer_costs()
    ann_joules = {name: float(sum(costs.ann_energy(layers, devices[name]))) for name in DEVICES}
    grid = timestep_grid(args.max_timesteps)
    fine_tune = read_json(run_dir / "fine_tune.json")
    fraction = fine_tune["config"]["readout_fraction"]
    paths = {}
    for name, change in [("converted: dt 1 ms, tau 0.1 s, 1000 Hz at the percentile (before the recipe)",
                          dict(tau=0.1, max_rate=1000.0)),
                         ("converted: dt 1 ms, tau 1 ms, 4000 Hz at the percentile (the recipe's end point)",
                          dict(tau=0.001, max_rate=4000.0))]:
        snn, _ = build_snn(run, ann, ConvertConfig(str(run_dir), max_timesteps=args.max_timesteps, dt=0.001,
                                                    tau=change["tau"], max_rate=change["max_rate"]))
        paths[name] = rows_by_timesteps(snn, batches, labels, grid, fraction, devices)
        print(name, [round(r["accuracy"], 3) for r in paths[name]], flush=True)
    paths["fine-tuned with --recipe snn4space"] = rows_by_timesteps(tuned, batches, labels, grid, fraction, devices)
    print("fine-tuned", [round(r["accuracy"], 3) for r in paths["fine-tuned with --recipe snn4space"]])
    report = {"run": str(run_dir), "ann_test_accuracy": ann_accuracy(ann, batches, labels), "ann_J": ann_joules,
              "fine_tune": {k: fine_tune[k] for k in ("config", "stages", "results", "trace", "dt_start", "dt_final",
                                                      "wall_time_s")},
              "final_dt": tuned.dt, "paths": paths}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "snn4space_recipe.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "snn4space_recipe.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    ft = report["fine_tune"]
    lines = ["# The snn4space recipe on UC Merced (quick-preset ReLU ANN, seed 0, 210 test images, 2 CPU cores)", "",
             f"ANN test accuracy {100 * report['ann_test_accuracy']:.1f} %; ANN energy per inference "
             + ", ".join(f"{name} {1e3 * j:.3f} mJ" for name, j in report["ann_J"].items()) + ".", "",
             f"Fine-tuning: `{_command(ft['config'])}`, {ft['wall_time_s'] / 60:.0f} min; dt from "
             f"{ft['dt_start']:g} s to {ft['dt_final']:g} s.", "",
             "## Per epoch of fine-tuning: dt, mean tau and training loss; test accuracy at each stage's end", "",
             "| T | epoch | dt (s) | mean tau (s) | train loss | test accuracy (that T, that dt) |",
             "|---|---|---|---|---|---|"]
    accuracy = {r["timesteps"]: r["accuracy"] for r in ft["results"]}
    stage_epochs = {s["timesteps"]: s["epochs"] for s in ft["stages"]}
    for row in ft["trace"]:
        last = row["epoch"] == stage_epochs[row["timesteps"]]
        lines.append(f"| {row['timesteps']} | {row['epoch']} | {row['dt']:.4g} | {row['tau_mean']:.4g} | "
                     f"{row['loss']:.4f} | " + (f"{100 * accuracy[row['timesteps']]:.1f} %" if last else "") + " |")
    lines += ["", "## Accuracy, spikes and energy per inference against T at dt = 1 ms", ""]
    for name, rows in report["paths"].items():
        lines += [f"### {name}", "", "| T | accuracy | gap to ANN (points) | spikes/image | SOP/MAC | "
                  + " | ".join(f"{d} mJ (SNN/ANN)" for d in DEVICES) + " |",
                  "|---|---|---|---|---|" + "---|" * len(DEVICES)]
        for r in rows:
            energy = " | ".join(f"{1e3 * r[f'snn_J_{d}']:.3f} ({r[f'snn_J_{d}'] / report['ann_J'][d]:.2f}x)"
                                for d in DEVICES)
            lines.append(f"| {r['timesteps']} | {100 * r['accuracy']:.1f} % | "
                         f"{100 * (r['accuracy'] - report['ann_test_accuracy']):+.1f} | {r['spikes_per_image']:.3g} | "
                         f"{r['sop_per_mac']:.2f} | {energy} |")
        lines.append("")
    return "\n".join(lines)


def _command(config: dict) -> str:
    return (f"fine_tune.py --recipe {config['recipe']} --timesteps {config['timesteps']} --epochs {config['epochs']} "
            f"--batch-size {config['batch_size']} --learning-rate {config['learning_rate']:g}")


if __name__ == "__main__":
    main()

"""Accuracy against energy per inference of converted SNNs and their ANNs (issue 14).

For every run given (each trained, converted and costed, e.g. by ``run_all.py`` with some ``--sparsity``),
every converted variant in its ``conversion.json`` (the default neurons and the sweep's others) and every T
evaluated there, the energy per inference on each device follows from the measured firing rate of each layer
through :mod:`snn4vision.costs`, the same path as ``energy_estimation.py``. The ANN of each run is one point.
Writes a table (with the accuracy/energy Pareto front marked) and a plot in the style of SNN4Space's
``acc_energy.png``.

Usage::

    .venv/bin/python benchmarks/energy_pareto.py --train 0 0.3 1 --out-dir runs/pareto --dataset ../shared/data/ucmerced
    .venv/bin/python benchmarks/energy_pareto.py --runs runs/pareto/qcfs-s0 runs/pareto/qcfs-L2-s1 ...

``--train`` runs ``run_all.py --sparsity S`` for each S (skipping runs that are complete); extra flags after
``--`` go to ``run_all.py`` (e.g. ``-- --levels 4 --pool-before-activation``).

Every point is priced under both cost models of :mod:`snn4vision.memory_costs` (compute-only and memory-aware,
the latter also against the fair quantised ANN, with Dampfhoffer et al.'s spikes per synapse and the
break-even). ``benchmarks/results/energy_pareto_memory.md`` (issue 29) is::

    .venv/bin/python benchmarks/energy_pareto.py --runs runs/pareto/default-s0 runs/pareto/L4-S0-s0 \
        --output benchmarks/results/energy_pareto_memory
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import snn4vision  # noqa: E402,F401  (tf-keras first)
from snn4vision import costs, memory_costs  # noqa: E402
from snn4vision.simulation import SpikingNetwork  # noqa: E402


def run_label(config: dict) -> str:
    kind = f"QCFS L={config['levels']}" if config["activation"] == "qcfs" else "ReLU"
    pooling = ", pooled before act." if config.get("pool_before_activation") else ""
    pooling += f", pooled maps at {config['pool_levels']} levels" if config.get("pool_levels") else ""
    pooling += f" read from {config['pre_pool_levels']}" if config.get("pre_pool_levels") else ""
    pooling += "".join(f", {name} L={steps}" for name, steps in config.get("layer_levels", {}).items())
    return f"{kind}, S={config.get('sparsity', 0.0):g}{pooling}, seed {config['seed']}"


def cheapest_within(anns: list, rows: list, points: float, device: str) -> list:
    """Per run, the SNN point (any variant and T) with the lowest energy on ``device`` whose accuracy is within
    ``points`` percentage points of the run's own ANN (None where no point is)."""
    found = []
    for ann in anns:
        mine = [r for r in rows if r["run"] == ann["run"]
                and 100 * (ann["accuracy"] - r["accuracy"]) <= points + 1e-9]
        best = min(mine, key=lambda r: r[f"J_{device}"], default=None)
        found.append((ann, best))
    return found


def points(run_dir: Path, devices: dict, fair) -> tuple[dict, list]:
    """The ANN's point and one point per (variant, T) of a run's conversion.json, each priced on every device
    under both models of :mod:`snn4vision.memory_costs`: ``J_<device>`` compute-only, ``M_<device>``
    memory-aware joules; the SNN's ``fair_<device>`` (memory-aware, over the fair quantised ANN on ``fair``),
    ``sops_per_synapse_<device>`` and ``break_even_<device>``."""
    config = json.loads((run_dir / "config.json").read_text())
    snn = SpikingNetwork.from_config(json.loads((run_dir / "snn.json").read_text()))
    conversion = json.loads((run_dir / "conversion.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    layers = snn.layer_costs()
    neurons = snn.neurons_per_layer()
    names = [(node.name, n) for node, n in zip(snn.neuron_nodes, neurons)]
    levels = snn.layer_levels()
    label = run_label(config)
    ann = {"run": label, "seed": config["seed"], "path": str(run_dir), "variant": "ANN", "timesteps": None,
           "accuracy": metrics["test"]["accuracy"], "sop_per_mac": None,
           **{f"J_{name}": sum(costs.ann_energy(layers, device)) for name, device in devices.items()}}
    rows = []
    for variant in conversion["variants"]:
        for row in variant["by_timesteps"]:
            t = row["timesteps"]
            spikes = [rate * n * t * variant["dt"] for rate, n in zip(row["firing_rate_hz"], neurons)]
            records = costs.network_activity(layers, names, spikes, t, synapse=variant["tau"] is not None)
            counted, operations, _ = costs.activity_costs(records, t)
            models = memory_costs.energy_models(records, t, devices, levels, fair)
            point = {"run": label, "seed": config["seed"], "path": str(run_dir), "variant": variant["name"],
                     "timesteps": t, "accuracy": row["accuracy"],
                     "sop_per_mac": costs.sop_per_mac(operations, counted)}
            for name, entry in models["devices"].items():
                point[f"J_{name}"] = entry["compute_only"]["snn_J"]
                point[f"M_{name}"] = entry["memory_aware"]["snn_J"]
                point[f"fair_{name}"] = entry["memory_aware"].get("snn_over_fair_ann")
                point[f"sops_per_synapse_{name}"] = entry["sops_per_synapse"]
                point[f"break_even_{name}"] = entry["break_even_sops_per_synapse"]
                # the ANN does not depend on the SNN's activity: any point's records price it
                ann[f"M_{name}"] = entry["memory_aware"]["ann_J"]
            ann["fair_J"] = models["fair_baseline"]["memory_aware_J"]
            rows.append(point)
    return ann, rows


def pareto(rows: list, key: str) -> set:
    """Indices of the rows no other row beats on both accuracy (higher) and ``key`` (lower)."""
    front = set()
    for i, a in enumerate(rows):
        if not any(b["accuracy"] >= a["accuracy"] and b[key] <= a[key] and (b["accuracy"], b[key]) != (a["accuracy"], a[key])
                   for b in rows):
            front.add(i)
    return front


def plot(anns: list, rows: list, devices: list, path: Path) -> None:
    """The runs of the lowest seed (one line per run: its default neurons over T), each ANN a star: compute-only
    on the first device, memory-aware on every device with the fair quantised ANN a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    seed = min(ann["seed"] for ann in anns)
    anns = [ann for ann in anns if ann["seed"] == seed]
    rows = [r for r in rows if r["seed"] == seed]
    panels = [(f"J_{devices[0]}", f"{devices[0]}, compute-only")] + [(f"M_{d}", f"{d}, memory-aware") for d in devices]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    runs = list(dict.fromkeys(r["run"] for r in rows))
    colours = {run: plt.cm.viridis(i / max(1, len(runs) - 1)) for i, run in enumerate(runs)}
    for ax, (key, title) in zip(axes[0], panels):
        for run in runs:
            mine = [r for r in rows if r["run"] == run and r["variant"].startswith("converted")]
            ax.plot([r[key] * 1e3 for r in mine], [100 * r["accuracy"] for r in mine], "o-", color=colours[run],
                    label=f"SNN ({run})", markersize=4)
            for r in mine:
                ax.annotate(f"T={r['timesteps']}", (r[key] * 1e3, 100 * r["accuracy"]), fontsize=6,
                            xytext=(3, -8), textcoords="offset points")
        for ann in anns:
            ax.plot(ann[key] * 1e3, 100 * ann["accuracy"], "*", color=colours.get(ann["run"], "black"),
                    markersize=12, markeredgecolor="black", label=f"ANN ({ann['run']})")
            ax.axvline(ann[key] * 1e3, color=colours.get(ann["run"], "black"), linestyle=":", linewidth=0.8)
            ax.axhline(100 * ann["accuracy"], color=colours.get(ann["run"], "black"), linestyle=":", linewidth=0.8)
            if key.startswith("M_"):
                ax.axvline(ann["fair_J"] * 1e3, color=colours.get(ann["run"], "black"), linestyle="--",
                           linewidth=0.8, label=f"fair quantised ANN ({ann['run']})")
        ax.set_xscale("log")
        ax.set_xlabel(f"energy per inference on {title} (mJ)")
        ax.set_ylabel("test accuracy (%)")
        # the region that matters, near the ANNs (T = 1 points far below them are cut off)
        ax.set_ylim(max(0, min(100 * a["accuracy"] for a in anns) - 12), 100)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(values: list, out_dir: Path, dataset: str, extra: list) -> list:
    runs = []
    for value in values:
        run_dir = out_dir / f"qcfs-s{value:g}"
        if not (run_dir / "summary.json").is_file():
            flags = ["--resume"] if (run_dir / "config.json").is_file() else ["--dataset", dataset]
            subprocess.run([sys.executable, str(ROOT / "pipelines" / "run_all.py"), "--run", str(run_dir),
                            "--sparsity", f"{value:g}", *flags, *extra], check=True)
        runs.append(run_dir)
    return runs


def _fronts(rows: list, key: str) -> set:
    """The Pareto front on ``key`` per seed (each seed's split has its own test images)."""
    front = set()
    for seed in {r["seed"] for r in rows}:
        mine = [i for i, r in enumerate(rows) if r["seed"] == seed]
        front |= {mine[i] for i in pareto([rows[i] for i in mine], key)}
    return front


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def compute_only_table(anns: list, rows: list, devices: list) -> tuple[list, list, str]:
    first, front = devices[0], _fronts(rows, f"J_{devices[0]}")
    lines = ["| run | neurons | T | accuracy | SOP/MAC | " + " | ".join(f"{d} mJ | {d} ratio" for d in devices)
             + " | front |", "|---|---|---|---|---|" + "---|---|" * len(devices) + "---|"]
    by_run = {ann["run"]: ann for ann in anns}
    for ann in anns:
        lines.append(f"| {ann['run']} | ANN | - | {100 * ann['accuracy']:.1f} | - | "
                     + " | ".join(f"{ann[f'J_{d}'] * 1e3:.3f} | 1 " for d in devices) + " | |")
    for i, r in enumerate(rows):
        ann = by_run[r["run"]]
        lines.append(f"| {r['run']} | {r['variant']} | {r['timesteps']} | {100 * r['accuracy']:.1f} | "
                     f"{r['sop_per_mac']:.3f} | "
                     + " | ".join(f"{r[f'J_{d}'] * 1e3:.3f} | {r[f'J_{d}'] / ann[f'J_{d}']:.2f}" for d in devices)
                     + f" | {'*' if i in front else ''} |")
    return lines, sorted(front), first


def memory_aware_table(anns: list, rows: list, devices: list) -> tuple[list, list]:
    """Memory-aware joules, the SNN over its own ANN and over the fair quantised ANN, and Dampfhoffer et al.'s
    spikes per synapse against the break-even, on each device; the front on the first device's memory-aware
    joules."""
    front = _fronts(rows, f"M_{devices[0]}")
    lines = ["| run | neurons | T | accuracy | " + " | ".join(
        f"{d} mJ | {d} / ANN | {d} / fair ANN | {d} SOP/synapse | {d} break-even" for d in devices)
             + " | front |", "|---|---|---|---|" + "---|---|---|---|---|" * len(devices) + "---|"]
    by_run = {ann["run"]: ann for ann in anns}
    for ann in anns:
        lines.append(f"| {ann['run']} | ANN (fair baseline {ann['fair_J'] * 1e3:.4f} mJ) | - | "
                     f"{100 * ann['accuracy']:.1f} | "
                     + " | ".join(f"{ann[f'M_{d}'] * 1e3:.3f} | 1 | {_ratio(ann[f'M_{d}'] / ann['fair_J'])} | - | -"
                                  for d in devices) + " | |")
    for i, r in enumerate(rows):
        ann = by_run[r["run"]]
        lines.append(f"| {r['run']} | {r['variant']} | {r['timesteps']} | {100 * r['accuracy']:.1f} | "
                     + " | ".join(f"{r[f'M_{d}'] * 1e3:.3f} | {_ratio(r[f'M_{d}'] / ann[f'M_{d}'])} | "
                                  f"{_ratio(r[f'fair_{d}'])} | {_ratio(r[f'sops_per_synapse_{d}'])} | "
                                  f"{_ratio(r[f'break_even_{d}'])}" for d in devices)
                     + f" | {'*' if i in front else ''} |")
    return lines, sorted(front)


def aims_table(anns: list, rows: list, first: str, memory_device: str) -> tuple[list, list]:
    """Per run, the cheapest SNN point on ``first`` (compute-only) within 1 and 2 points of its own ANN, with its
    memory-aware cost on ``memory_device`` against the fair quantised ANN (issue 29's aim: 0.5)."""
    lines = [f"| run | ANN | within | neurons | T | accuracy | SOP/MAC | {first} ratio (compute-only) | "
             f"{memory_device} / fair ANN (memory-aware) |", "|---|---|---|---|---|---|---|---|---|"]
    aims = []
    for points_off in (1.0, 2.0):
        for ann, best in cheapest_within(anns, rows, points_off, first):
            if best is None:
                lines.append(f"| {ann['run']} | {100 * ann['accuracy']:.1f} | {points_off:g} | none | | | | | |")
                continue
            ratio = best[f"J_{first}"] / ann[f"J_{first}"]
            fair = best[f"fair_{memory_device}"]
            aims.append({"run": ann["run"], "within_points": points_off, "variant": best["variant"],
                         "timesteps": best["timesteps"], "accuracy": best["accuracy"],
                         "ann_accuracy": ann["accuracy"], "sop_per_mac": best["sop_per_mac"], "ratio": ratio,
                         "memory_aware_over_fair_ann": fair})
            lines.append(f"| {ann['run']} | {100 * ann['accuracy']:.1f} | {points_off:g} | {best['variant']} | "
                         f"{best['timesteps']} | {100 * best['accuracy']:.1f} | {best['sop_per_mac']:.3f} | "
                         f"{ratio:.2f} | {_ratio(fair)} |")
    return lines, aims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], help="finished run directories")
    parser.add_argument("--train", nargs="*", type=float, default=[], help="sparsity values to train with run_all.py")
    parser.add_argument("--out-dir", default="runs/pareto")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "ucmerced"))
    parser.add_argument("--devices", nargs="+", default=["loihi", "45nm", "45nm_int8"],
                        help="spiking profiles without graded spikes (conversion.json records spikes, not messages)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "energy_pareto"))
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    available = costs.load_devices()
    for name in args.devices:
        if name not in available or not available[name].spiking or available[name].graded:
            sys.exit(f"error: --devices {name}: give spiking profiles without graded spikes (conversion.json "
                     f"records spikes, not messages; price graded devices with energy_estimation.py): "
                     f"{', '.join(n for n, d in sorted(available.items()) if d.spiking and not d.graded)}")
    runs = [Path(r) for r in args.runs] + train(args.train, Path(args.out_dir), args.dataset, extra)
    devices = {name: available[name] for name in args.devices}
    anns, rows = [], []
    for run_dir in runs:
        ann, mine = points(run_dir, devices, available[memory_costs.FAIR_BASELINE])
        anns.append(ann)
        rows += mine
    compute, front, first = compute_only_table(anns, rows, args.devices)
    memory, memory_front = memory_aware_table(anns, rows, args.devices)
    memory_device = args.devices[-1]
    aims_lines, aims = aims_table(anns, rows, first, memory_device)
    lines = ["# Accuracy against energy per inference (issues 14 and 29)", "",
             f"`benchmarks/energy_pareto.py`, {len(runs)} run(s), each on the 210 test images of its seed's split "
             f"(one run per point: one image is 0.48 points). Energy from the measured firing rates of each "
             f"layer (`conversion.json`) through `snn4vision.costs` (compute-only) and `snn4vision.memory_costs` "
             f"(memory-aware, with the fair baseline: the same ANN at int8 weights and its own activation bits "
             f"on {memory_costs.FAIR_BASELINE}; see docs/energy_models.md). Below T = L, neurons with bursts of "
             f"at least L / T spikes fire the L levels compressed into the T steps (at T = 1, each QCFS level in "
             f"one burst: the ANN up to float rounding). The figure shows the runs of seed "
             f"{min(a['seed'] for a in anns)}.", "",
             "Each run: `run_all.py --dataset ../shared/data/ucmerced` (quick preset) with the levels, "
             "`--sparsity`, `--pool-before-activation`, `--pool-levels` and `--seed` its label names "
             "(`--pool-levels 0` where it names no pooled-map levels); the run directories are in "
             "`energy_pareto.json`.", "",
             "## Compute-only (SNN4Space's convention)", "",
             f"SOP/MAC: the SNN's synaptic operations (and first-layer MACs) per ANN MAC; ratio: SNN / its own "
             f"ANN on that device. * marks the Pareto front on {first}, per seed.", "", *compute, "",
             "## Memory-aware", "",
             f"Joules with memory traffic; `/ ANN`: over its own ANN on that device; `/ fair ANN`: over the fair "
             f"quantised ANN; SOP/synapse: synaptic operations per ANN synapse (Dampfhoffer et al.'s spikes per "
             f"synapse); break-even: the SOP/synapse at which this point would cost what the fair ANN does "
             f"(its activity scaled; `-`: even a silent SNN costs more). * marks the front on {first}'s "
             f"memory-aware joules, per seed.", "", *memory, "",
             "## The aims", "",
             f"Per run, the SNN point with the least energy on {first} (compute-only) within 1 and 2 points of its "
             f"own ANN (aims 0.5 and 0.25 of issue 14), with its memory-aware cost on {memory_device} over the "
             f"fair quantised ANN (issue 29's aim: 0.5).", "", *aims_lines]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".md").write_text("\n".join(lines) + f"\n\n![accuracy against energy]({output.name}.png)\n")
    output.with_suffix(".json").write_text(json.dumps({"anns": anns, "snns": rows, "front": front,
                                                       "memory_aware_front": memory_front, "aims": aims},
                                                      indent=1, allow_nan=False) + "\n")
    plot(anns, rows, args.devices, output.with_suffix(".png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

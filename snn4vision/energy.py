"""Energy per inference of the ANN and the SNN on hardware profiles.

Profiles are TOML files in ``snn4vision/profiles/`` (one per device; see
``snn4vision/profiles/README.md`` for the method and sources), shipped as package data. Counting:

- ANN: every synapse is one multiply-accumulate (MAC) per inference (conv:
  ``H_out * W_out * k_h * k_w * C_in * C_out``; dense: ``in * out``); pooling
  and global average pooling are additions; every ReLU is a neuron update.
- SNN on a spiking (event-driven) device: the first layer sees the analog
  image, which is constant in time, so its MACs are paid once; every later
  layer pays one synaptic operation (SOP) per presynaptic spike and synapse
  (measured spikes x fan-out); neurons (and synaptic filters, when present)
  are updated every timestep.
- SNN on a non-spiking device: every synapse is computed every timestep.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import resources, rundir
from .errors import UserError
from .rundir import ENERGY_CSV, ENERGY_JSON, ENERGY_PLOT

#: The profiles shipped with the package (package data, so a non-editable install finds them too).
ENERGY_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class Device:
    """Energy figures of one device (joules)."""

    name: str
    spiking: bool
    energy_per_synop: float  # per synaptic operation: an accumulate on spiking devices, a MAC otherwise
    energy_per_neuron: float  # per neuron (or synaptic filter) update
    energy_per_mac: float | None = None  # per MAC with an analog operand; None: energy_per_synop
    source: str = ""

    @property
    def mac(self) -> float:
        return self.energy_per_synop if self.energy_per_mac is None else self.energy_per_mac


def load_devices(directory: str | Path | None = None) -> dict:
    """All ``*.toml`` device profiles of ``directory`` (default: the shipped ``profiles/``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    directory = Path(directory) if directory else ENERGY_DIR
    files = sorted(directory.glob("*.toml")) if directory.is_dir() else []
    if not files:
        raise UserError(f"no device profiles (*.toml) in {directory}: pass --profiles with the folder that holds them")
    devices = {}
    for path in files:
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
            device = Device(**values)
        except (tomllib.TOMLDecodeError, TypeError) as exc:
            raise UserError(f"device profile {path} is invalid ({exc}): it needs name, spiking, energy_per_synop, "
                            "energy_per_neuron and optionally energy_per_mac and source") from None
        devices[device.name] = device
    return devices


@dataclass
class LayerCost:
    """Per-inference counts of one layer of a network.

    ``connections``: synapses (= MACs of one dense evaluation); ``inputs``:
    the size of the layer's input, so ``connections / inputs`` is the mean
    fan-out of one input value; ``neurons``: spiking/ReLU units it feeds;
    ``adds``: additions (pooling).
    """

    name: str
    connections: int
    inputs: int
    neurons: int
    adds: int = 0

    @property
    def fan_out(self) -> float:
        return self.connections / self.inputs if self.inputs else 0.0


def vgg_layer_costs(channels, pool_after, image_size: int, num_classes: int, kernel_size: int = 3) -> list:
    """Counts of the SNN4Space VGG-16 (convs with 'same' padding, 2x2 average pools, GAP, dense).

    Pooling is charged to the conv that reads the pooled map (its ``adds``);
    the GAP's additions are charged to the logits layer.
    """
    costs, size, c_in, pending_adds = [], image_size, 3, 0
    for i, (c_out, pool) in enumerate(zip(channels, pool_after)):
        inputs = size * size * c_in
        costs.append(LayerCost(f"conv{i + 1}", size * size * kernel_size ** 2 * c_in * c_out, inputs,
                               size * size * c_out, pending_adds))
        pending_adds = size * size * c_out if pool else 0
        size = size // 2 if pool else size
        c_in = c_out
    costs.append(LayerCost("logits", c_in * num_classes, c_in, 0, size * size * c_in))
    return costs


def transformer_costs(layers: list, timesteps: int, dt: float = 0.001) -> tuple:
    """Counts of a spiking transformer from its measured activity (:func:`snn4vision.transformers.measure`).

    Returns ``(costs, operations, rates_hz)``, one row per recorded entry:
    synapses (convs and dense layers: one SOP per input spike, or per unit
    of a spike count, and synapse; the analog stem and an averaged head as
    MACs, once per evaluation), attention products (the measured
    accumulates; the same product with dense operands on non-spiking
    hardware) and neuron layers (one update per neuron per step; firing
    rate in Hz at ``dt`` seconds per step). ``connections`` of the
    attention rows and of the neurons is what one dense (ANN-like) pass of
    the same network computes.
    """
    costs, operations, rates = [], [], []
    for e in layers:
        if e["kind"] == "neurons":
            costs.append(LayerCost(e["name"], 0, 0, e["neurons"]))
            operations.append({"macs": 0.0, "sops": 0.0, "updates": float(e["neurons"] * timesteps),
                               "dense_synops": 0.0})
            rates.append(e["rate"] / dt)
            continue
        if e["kind"] == "attention":
            costs.append(LayerCost(e["name"], e["dense_macs"], 0, 0))
            operations.append({"macs": 0.0, "sops": float(e["accumulates"]), "updates": 0.0,
                               "dense_synops": float(e["dense_macs"] * timesteps)})
        elif e["events"] is None:  # analog input: multiply-accumulates
            macs = float(e["connections"] * e["evaluations"])
            costs.append(LayerCost(e["name"], e["connections"], e["inputs"], 0))
            operations.append({"macs": macs, "sops": 0.0, "updates": 0.0, "dense_synops": macs})
        else:
            cost = LayerCost(e["name"], e["connections"], e["inputs"], 0)
            costs.append(cost)
            operations.append({"macs": 0.0, "sops": float(e["events"]) * cost.fan_out, "updates": 0.0,
                               "dense_synops": float(e["connections"] * timesteps)})
        rates.append(None)
    return costs, operations, rates


def ann_energy(costs: list, device: Device) -> list:
    """Joules per inference of each layer of the ANN on ``device``."""
    return [c.connections * device.mac + c.adds * device.energy_per_synop + c.neurons * device.energy_per_neuron
            for c in costs]


def snn_operations(costs: list, spikes_per_layer, timesteps: int, synapse: bool) -> list:
    """Per layer: ``{"macs", "sops", "updates"}`` of the SNN per inference.

    ``spikes_per_layer[l]``: spikes of neuron layer ``l`` per image over the
    ``timesteps`` steps (measured). Layer ``l + 1`` receives them.
    """
    rows = []
    for i, cost in enumerate(costs):
        first = i == 0
        sops = 0.0 if first else float(spikes_per_layer[i - 1]) * cost.fan_out
        updates = cost.neurons * timesteps * (2 if synapse else 1)
        rows.append({"macs": float(cost.connections) if first else 0.0, "sops": sops, "updates": float(updates),
                     "dense_synops": float(cost.connections) * (1 if first else timesteps)})
    return rows


def snn_energy(operations: list, device: Device) -> list:
    """Joules per inference of each SNN layer on ``device``.

    Spiking devices pay for spikes (SOPs); non-spiking devices compute every
    synapse every timestep (``dense_synops``).
    """
    if device.spiking:
        return [o["macs"] * device.mac + o["sops"] * device.energy_per_synop + o["updates"] * device.energy_per_neuron
                for o in operations]
    return [o["dense_synops"] * device.mac + o["updates"] * device.energy_per_neuron for o in operations]


def energy_table(costs: list, operations: list, rates_hz: list, devices: dict) -> list:
    """One row per layer with counts, firing rate and joules per device, plus a total row."""
    rows = []
    ann = {name: ann_energy(costs, d) for name, d in devices.items()}
    snn = {name: snn_energy(operations, d) for name, d in devices.items()}
    for i, (cost, ops) in enumerate(zip(costs, operations)):
        row = {"layer": cost.name, "ann_macs": cost.connections, "ann_adds": cost.adds, "neurons": cost.neurons,
               "snn_macs": ops["macs"], "snn_sops": ops["sops"], "snn_updates": ops["updates"],
               "firing_rate_hz": rates_hz[i] if i < len(rates_hz) else None}
        for name in devices:
            row[f"ann_J_{name}"] = ann[name][i]
            row[f"snn_J_{name}"] = snn[name][i]
        rows.append(row)
    total = {"layer": "total", "firing_rate_hz": None}
    for key in rows[0]:
        if key not in total:
            total[key] = float(sum(r[key] for r in rows))
    rows.append(total)
    return rows


def rows_to_csv(rows: list) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def summary(total: dict, devices: dict) -> dict:
    """Totals per device and the SNN/ANN ratio."""
    return {name: {"ann_J": total[f"ann_J_{name}"], "snn_J": total[f"snn_J_{name}"],
                   "snn_over_ann": total[f"snn_J_{name}"] / total[f"ann_J_{name}"] if total[f"ann_J_{name}"] else math.nan,
                   "spiking": d.spiking} for name, d in devices.items()}


def device_table(devices: dict) -> list:
    return [asdict(d) | {"energy_per_mac": d.mac} for d in devices.values()]




def estimate_energy(run_dir: str | Path, devices: list | None = None, timesteps: int | None = None,
                    model: str = "auto", profiles: str | Path | None = None, batch_size: int = 32,
                    data_dir: str | None = None, overwrite: bool = False, verbose: bool = True) -> dict:
    """Energy per inference of a run's ANN and SNN from spikes measured on its test split.

    ``model``: ``converted``, ``fine-tuned`` or ``auto`` (fine-tuned if present).
    ``timesteps``: T of the SNN (default: the saved SNN's). Writes
    ``energy.json``, ``energy.csv`` and ``energy.png`` into ``run_dir``.
    """
    with rundir.locked(Path(run_dir), create=False), rundir.replacing(Path(run_dir)):
        return _estimate_energy(Path(run_dir), devices, timesteps, model, profiles, batch_size, data_dir, overwrite,
                                verbose)


def _estimate_energy(run_dir: Path, devices, timesteps, model, profiles, batch_size, data_dir, overwrite,
                     verbose) -> dict:
    from .checkpoints import atomic_write_json, atomic_write_text
    from .training import open_run

    available = load_devices(profiles)
    names = list(available) if not devices else list(devices)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(f"unknown device(s) {', '.join(unknown)}: choose from {', '.join(available)} "
                        "or pass --profiles with a folder that also holds a profile of your own")
    if timesteps is not None:
        resources.check_timesteps(timesteps)
    if model not in ("auto", "converted", "fine-tuned"):
        raise UserError(f"unknown model {model!r}: use auto, converted or fine-tuned")
    rundir.prepare_new(run_dir, [ENERGY_JSON, ENERGY_CSV, ENERGY_PLOT], False, overwrite, resumable=False,
                       stage="energy")
    run = open_run(run_dir, data_dir)
    selected = {n: available[n] for n in names}
    if run.config.spiking:
        report = _transformer_report(run, run_dir, selected, timesteps, batch_size)
    else:
        report = _converted_report(run, run_dir, selected, timesteps, model, batch_size)
    atomic_write_json(run_dir / ENERGY_JSON, report)
    atomic_write_text(run_dir / ENERGY_CSV, rows_to_csv(report["layers"]))
    plot_energy(report, run_dir / ENERGY_PLOT)
    models = {"converted": [rundir.ANN_WEIGHTS, rundir.SNN_CONFIG, rundir.SNN_WEIGHTS],
              "fine-tuned": [rundir.ANN_WEIGHTS, rundir.FINE_TUNED_CONFIG, rundir.FINE_TUNED_WEIGHTS]}
    rundir.record_outputs(run_dir, "energy", [ENERGY_JSON, ENERGY_CSV],
                          [rundir.SPLIT] + models.get(report["model"], [rundir.TRANSFORMER_WEIGHTS]))
    if verbose:
        print(format_summary(report))
    return report


def _report(costs, operations, rates, devices: dict, **fields) -> dict:
    rows = energy_table(costs, operations, rates, devices)
    return fields | {"devices": device_table(devices), "summary": summary(rows[-1], devices), "layers": rows}


def _transformer_report(run, run_dir: Path, devices: dict, timesteps: int | None, batch_size: int) -> dict:
    """Energy of a directly trained spiking transformer, from activity measured on the test split."""
    from . import data
    from .transformers import load_trained, measure, total_spikes

    dataclasses.replace(run.config, timesteps=timesteps or run.config.timesteps).check_transformer_memory(
        batch_size, training=False)
    model = load_trained(run_dir, run.config, len(run.classes), timesteps)
    config = run.config
    labels = run.labels("test")
    with data.explain_bad_images(run.source, run.indices("test")):
        result = measure(model, data.evaluation_batches(run.decoded("test"), batch_size))
    accuracy = float(np.mean(result["logits"].argmax(axis=1) == labels))
    costs, operations, rates = transformer_costs(result["layers"], model.timesteps)
    spikes = total_spikes(result["layers"])
    return _report(costs, operations, rates, devices, model=config.architecture, timesteps=model.timesteps,
                   dt=0.001, test_images=int(len(labels)), ann_test_accuracy=None, snn_test_accuracy=accuracy,
                   spikes_per_image=float(spikes),
                   method="Directly trained spiking transformer. 'ann' columns: the same network evaluated once "
                          "with dense operands (one MAC per synapse and attention product, one update per neuron). "
                          "'snn' columns on spiking devices: the analog first conv as MACs once (constant image), "
                          "one SOP per measured input spike (or unit of a spike count) and synapse, the measured "
                          "accumulates of the attention products, one update per neuron per step; on non-spiking "
                          "devices every synapse and product every step. Rates in Hz at 1 ms per step.")


def _converted_report(run, run_dir: Path, devices: dict, timesteps: int | None, model: str, batch_size: int) -> dict:
    """Energy of the run's VGG-16 ANN and its converted (or fine-tuned) SNN."""
    from . import data
    from .convert import (ann_accuracy, firing_rates, layer_spikes, load_ann, load_snn, readout_accuracy,
                          readout_steps, simulate_split)
    from .fine_tuning import FINE_TUNED_CONFIG, load_fine_tuned

    if model == "auto":
        model = "fine-tuned" if (run_dir / FINE_TUNED_CONFIG).exists() else "converted"
    snn = load_fine_tuned(run_dir, timesteps) if model == "fine-tuned" else load_snn(run_dir, timesteps)
    ann = load_ann(run_dir, run.config, len(run.classes))
    labels = run.labels("test")
    batches = data.evaluation_batches(run.decoded("test"), batch_size)
    with data.explain_bad_images(run.source, run.indices("test")):
        ann_test_accuracy = ann_accuracy(ann, batches, labels)
        result = simulate_split(snn, batches, snn.timesteps)
    k = readout_steps(snn.timesteps, 1.0) if snn.readout_steps is None else snn.readout_steps
    snn_accuracy = readout_accuracy(result["logits"], labels, k)
    spikes = layer_spikes(result["spikes"])
    costs = vgg_layer_costs(snn.channels, snn.pool_after, snn.image_size, snn.num_classes)
    operations = snn_operations(costs, spikes, snn.timesteps, synapse=snn.tau is not None)
    rates = firing_rates(spikes, snn.neurons_per_layer(), snn.timesteps, snn.dt)
    return _report(costs, operations, rates, devices, model=model, timesteps=snn.timesteps, dt=snn.dt,
                   test_images=int(len(labels)), ann_test_accuracy=ann_test_accuracy, snn_test_accuracy=snn_accuracy,
                   spikes_per_image=float(spikes.sum()),
                   method="ANN: one MAC per synapse, adds for pooling, one update per ReLU. SNN on spiking devices: "
                          "first layer MACs once (constant analog input), one SOP per measured presynaptic spike "
                          "and synapse, neuron (and synaptic filter) updates every timestep. SNN on non-spiking "
                          "devices: every synapse every timestep. See snn4vision/profiles/README.md.")


def format_summary(report: dict) -> str:
    ann = "n/a (directly trained)" if report["ann_test_accuracy"] is None else f"{report['ann_test_accuracy']:.3f}"
    lines = [f"ANN test accuracy {ann}; SNN ({report['model']}, T={report['timesteps']}) "
             f"{report['snn_test_accuracy']:.3f}, {report['spikes_per_image']:.0f} spikes/image",
             f"{'device':>12} {'spiking':>8} {'ANN J/inf':>12} {'SNN J/inf':>12} {'SNN/ANN':>9}"]
    for name, s in report["summary"].items():
        lines.append(f"{name:>12} {str(s['spiking']):>8} {s['ann_J']:12.3e} {s['snn_J']:12.3e} {s['snn_over_ann']:9.3f}")
    return "\n".join(lines)


def plot_energy(report: dict, path: Path) -> None:
    """Bar chart of ANN and SNN joules per inference on every device (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoints import atomic_save_figure

    names = list(report["summary"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [report["summary"][n]["ann_J"] for n in names], 0.4, label="ANN")
    ax.bar(x + 0.2, [report["summary"][n]["snn_J"] for n in names], 0.4,
           label=f"SNN ({report['model']}, T={report['timesteps']})")
    for i, n in enumerate(names):  # the ratio over each pair of bars
        s = report["summary"][n]
        ax.annotate(f"{s['snn_over_ann']:.2f}x", (i, max(s["ann_J"], s["snn_J"])), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    top = max(max(s["ann_J"], s["snn_J"]) for s in report["summary"].values())
    ax.set_ylim(top=top * 3)  # room for the ratio labels
    ax.set_ylabel("joules per inference")
    ax.set_title("SNN / ANN energy per device", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    atomic_save_figure(fig, path)

"""Stage 4: energy per inference of a run's ANN and SNN on device profiles (``pipelines/energy_estimation.py``).

The counting and pricing live in :mod:`snn4vision.costs`; this module measures
the spikes on the run's test images, applies the costs and writes the report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import data, events, resources, rundir
from ..checkpoints import atomic_save_figure, atomic_write_json, atomic_write_text
from ..costs import (activity_costs, device_table, drive_input_by_events, energy_table, load_devices, rows_to_csv,
                    summary)
from ..errors import UserError
from ..evaluation import ann_accuracy, layer_spikes, network_readout_steps, readout_accuracy, simulate_split
from ..memory_costs import FAIR_BASELINE, energy_models
from ..report_pages import plain
from ..rundir import (ENERGY_CSV, ENERGY_JSON, ENERGY_PLOT, FINE_TUNED_CONFIG, load_ann, load_fine_tuned, load_snn,
                     load_trained, open_run)
from ..transformers import measure, total_spikes


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


def check_request(devices, timesteps, model: str = "auto", profiles=None) -> tuple[dict, list]:
    """Refuse unknown devices, T or model before anything is written (run_all checks them before training too);
    returns the available profiles and the names of those asked for."""
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
    return available, names


def _estimate_energy(run_dir: Path, devices, timesteps, model, profiles, batch_size, data_dir, overwrite,
                     verbose) -> dict:
    available, names = check_request(devices, timesteps, model, profiles)
    rundir.prepare_new(run_dir, [ENERGY_JSON, ENERGY_CSV, ENERGY_PLOT], False, overwrite, resumable=False,
                       stage="energy")
    run = open_run(run_dir, data_dir)
    selected = {n: available[n] for n in names}
    fair = available.get(FAIR_BASELINE)  # the fair baseline is priced whether or not its profile was asked for
    if run.config.spiking:
        report = _transformer_report(run, run_dir, selected, timesteps, batch_size, fair)
    else:
        report = _converted_report(run, run_dir, selected, timesteps, model, batch_size, fair)
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


MODELS = ("Two energy models, side by side. Compute-only ('summary'): operations at each device's per-operation "
          "energy, the ANN as fp32 MACs on the same device (SNN4Space's convention). Memory-aware ('memory_aware'): "
          "the same plus weight, bias and membrane-potential reads and writes, input/output and event traffic and "
          "event addressing, SRAM energy from memory size and word width, the ANN with data reuse; profiles "
          "without an SRAM law (measured chips) add only spike messages. 'fair_baseline': the ANN at its own "
          "precision (int8 weights, ceil(log2(L+1))-bit activations) on 45 nm. See docs/energy_models.md.")


def _report(records, timesteps, devices: dict, fair, levels=None, dt=0.001, **fields) -> dict:
    costs, operations, rates = activity_costs(records, timesteps, dt)
    rows = energy_table(costs, operations, rates, devices)
    models = energy_models(records, timesteps, devices, levels, fair)
    totals = summary(rows[-1], devices)
    memory = {}
    for name, entry in models["devices"].items():
        totals[name]["snn_over_fair_ann"] = entry["compute_only"].get("snn_over_fair_ann")
        memory[name] = entry["memory_aware"] | {"spiking": devices[name].spiking,
                                                "sops_per_synapse": entry["sops_per_synapse"],
                                                "break_even_sops_per_synapse": entry["break_even_sops_per_synapse"]}
    return fields | {"timesteps": timesteps, "dt": dt, "sop_per_mac": rows[-1]["sop_per_mac"],
                     "devices": device_table(devices), "energy_models": MODELS, "summary": totals,
                     "memory_aware": memory, "fair_baseline": models["fair_baseline"], "layers": rows}


def _transformer_report(run, run_dir: Path, devices: dict, timesteps: int | None, batch_size: int, fair) -> dict:
    """Energy of a directly trained spiking transformer, from activity measured on the test split."""
    run.config.check_transformer_memory(batch_size, training=False, timesteps=timesteps)
    model = load_trained(run_dir, run.config, len(run.classes), timesteps)
    config = run.config
    labels = run.labels("test")
    with data.explain_bad_images(run.source, run.indices("test")):
        result = measure(model, run.batches("test", batch_size))
    accuracy = float(np.mean(result["logits"].argmax(axis=1) == labels))
    spikes = total_spikes(result["layers"])
    binning = run.source.binning if run.source.kind == "events" else None
    extra = {}
    if binning is not None and binning.frames is not None:
        # event frames, one per step: the stem reads the input events, one SOP per event and synapse, as the
        # converted SNN's first layer does, rather than MACs of an analog frame every step
        input_events = events.input_events(run.batches("test", batch_size), binning, binning.frames) / len(labels)
        drive_input_by_events(result["layers"], input_events)
        extra = {"input": f"event recordings, {binning.frames} frames, one per step",
                 "input_events_per_image": input_events}
    return _report(result["layers"], model.timesteps, devices, fair, model=config.architecture,
                   test_images=int(len(labels)), ann_test_accuracy=None, snn_test_accuracy=accuracy,
                   spikes_per_image=float(spikes),
                   method="Directly trained spiking transformer. 'ann' columns: the same network evaluated once "
                          "with dense operands (one MAC per synapse and attention product, one update per neuron). "
                          "'snn' columns on spiking devices: the analog first conv as MACs once (constant image), "
                          "one SOP per measured input spike (or unit of a spike count) and synapse, the measured "
                          "accumulates of the attention products, one update per neuron per step; on non-spiking "
                          "devices every synapse and product every step. Rates in Hz at 1 ms per step."
                          + (" Event input: the first conv costs one SOP per input event (counted at the run's "
                             "resolution) and synapse, not MACs." if extra else ""), **extra)


def _converted_report(run, run_dir: Path, devices: dict, timesteps: int | None, model: str, batch_size: int,
                      fair) -> dict:
    """Energy of the run's ANN and its converted (or fine-tuned) SNN, counted per node of the layer graph."""
    if model == "auto":
        model = "fine-tuned" if (run_dir / FINE_TUNED_CONFIG).exists() else "converted"
    snn = load_fine_tuned(run_dir, timesteps) if model == "fine-tuned" else load_snn(run_dir, timesteps)
    ann = load_ann(run_dir, run.config, len(run.classes))
    labels = run.labels("test")
    batches = run.batches("test", batch_size)
    # an event run: the SNN takes the recording one frame per step, and its input layers are driven by events
    frames = run.step_batches("test", batch_size, snn.timesteps)
    with data.explain_bad_images(run.source, run.indices("test")):
        ann_test_accuracy = ann_accuracy(ann, batches, labels)
        result = simulate_split(snn, batches if frames is None else frames, snn.timesteps)
    snn_accuracy = readout_accuracy(result["logits"], labels, network_readout_steps(snn, snn.timesteps))
    spikes = layer_spikes(result["spikes"])
    records = snn.activity(spikes, snn.timesteps, layer_spikes(result["events"]))
    if frames is not None:
        input_events = events.input_events(frames, run.source.binning, snn.timesteps) / len(labels)
        drive_input_by_events(records, input_events, snn.layer_costs())
    extra = {} if frames is None else {
        "input": f"event recordings, {snn.timesteps} frames, one per step",
        "input_events_per_image": input_events}
    return _report(records, snn.timesteps, devices, fair, snn.layer_levels(), snn.dt, model=model,
                   test_images=int(len(labels)), ann_test_accuracy=ann_test_accuracy, snn_test_accuracy=snn_accuracy,
                   spikes_per_image=float(spikes.sum()),
                   method="ANN: one MAC per synapse, adds for pooling and residual adds, one update per ReLU. SNN "
                          "on spiking devices: MACs once for the layers that read the image (constant analog "
                          "input), one SOP per measured presynaptic spike and synapse (a layer after a residual "
                          "add receives both branches' spikes), neuron (and synaptic filter) updates every "
                          "timestep. SNN on non-spiking devices: every synapse every timestep. See "
                          "energy/README.md. Graded-spike devices (loihi2): one SOP per message "
                          "(a burst) and synapse, plus its payload."
                          + ("" if frames is None else " Event input: the recording binned into one frame per "
                             "step, and the layers that read it cost one SOP per input event (counted at the run's "
                             "resolution) and synapse, not MACs."), **extra)


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_summary(report: dict) -> str:
    """The report in a few lines; every energy says its model (compute-only, memory-aware)."""
    ann = "n/a (directly trained)" if report["ann_test_accuracy"] is None else f"{report['ann_test_accuracy']:.3f}"
    lines = [f"ANN test accuracy {ann}; SNN ({report['model']}, T={report['timesteps']}) "
             f"{report['snn_test_accuracy']:.3f}, {report['spikes_per_image']:.0f} spikes/image, "
             f"{report['sop_per_mac']:.3f} synaptic operations per ANN MAC",
             "compute-only model (ANN as fp32 MACs on the same device):",
             f"{'device':>12} {'spiking':>8} {'ANN J/inf':>12} {'SNN J/inf':>12} {'SNN/ANN':>9} {'SNN/fairANN':>12}"]
    for name, s in report["summary"].items():
        lines.append(f"{name:>12} {str(s['spiking']):>8} {s['ann_J']:12.3e} {s['snn_J']:12.3e} "
                     f"{s['snn_over_ann']:9.3f} {_ratio(s.get('snn_over_fair_ann')):>12}")
    memory = report.get("memory_aware")
    if memory:  # absent from energy.json written before issue 29
        lines += ["memory-aware model (memory traffic, events; ANN with data reuse):",
                  f"{'device':>12} {'ANN J/inf':>12} {'SNN J/inf':>12} {'SNN/ANN':>9} {'SNN/fairANN':>12} "
                  f"{'SOP/syn':>8} {'break-even':>10}"]
        for name, m in memory.items():
            even = m.get("break_even_sops_per_synapse")
            lines.append(f"{name:>12} {m['ann_J']:12.3e} {m['snn_J']:12.3e} {_ratio(m['snn_over_ann']):>9} "
                         f"{_ratio(m.get('snn_over_fair_ann')):>12} {_ratio(m.get('sops_per_synapse')):>8} "
                         f"{_ratio(even):>10}")
    fair = report.get("fair_baseline")
    if fair:
        lines.append(f"fair baseline: the ANN on {fair['device']} (int8 weights, own activation bits): "
                     f"{fair['compute_only_J']:.3e} J compute-only, {fair['memory_aware_J']:.3e} J memory-aware")
    return "\n".join(lines)


def plot_energy(report: dict, path: Path) -> None:
    """Bar chart of ANN and SNN joules per inference on every device (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    names = list(report["summary"])
    x = np.arange(len(names))
    memory = report.get("memory_aware") or {}
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(x - 0.3, [report["summary"][n]["ann_J"] for n in names], 0.2, label="ANN, compute-only")
    ax.bar(x - 0.1, [report["summary"][n]["snn_J"] for n in names], 0.2,
           label=f"SNN ({report['model']}, T={report['timesteps']}), compute-only")
    if memory:
        ax.bar(x + 0.1, [memory[n]["ann_J"] for n in names], 0.2, label="ANN, memory-aware", hatch="//")
        ax.bar(x + 0.3, [memory[n]["snn_J"] for n in names], 0.2, label="SNN, memory-aware", hatch="//")
    for i, n in enumerate(names):  # the ratio over each pair of bars
        s = report["summary"][n]
        ax.annotate(f"{s['snn_over_ann']:.2f}x", (i - 0.2, max(s["ann_J"], s["snn_J"])), ha="center",
                    va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        if n in memory and memory[n]["snn_over_ann"] is not None:
            m = memory[n]
            ax.annotate(f"{m['snn_over_ann']:.2f}x", (i + 0.2, max(m["ann_J"], m["snn_J"])), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, [plain(n) for n in names])  # profile names drawn as written, never as math text
    ax.set_yscale("log")
    top = max(max(s["ann_J"], s["snn_J"]) for s in list(report["summary"].values()) + list(memory.values()))
    ax.set_ylim(top=top * 3)  # room for the ratio labels
    ax.set_ylabel("joules per inference")
    ax.set_title("SNN / ANN energy per device: compute-only and memory-aware models", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    atomic_save_figure(fig, path)

"""Stage 2: convert the trained ANN into a spiking network (``pipelines/convert_snn.py``)."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import api, data, layer_graph, resources, rundir
from ..checkpoints import atomic_save_figure, atomic_write_json, save_variables
from ..errors import UserError, check_keras
from ..evaluation import ann_accuracy, firing_rates, layer_spikes, readout_accuracy, readout_steps, simulate_split
from ..rundir import CONVERSION, CONVERSION_PLOT, SNN_CONFIG, SNN_WEIGHTS, load_ann, open_run
from ..simulation import SpikingNetwork

#: The step lengths --dt accepts, in seconds: the simulator floors dt at 1e-8 s, and far shorter steps overflow the
#: float32 rates (1 / dt Hz) into a NaN SNN; SNN4Space's recipe converts at 1 s.
MIN_DT, MAX_DT = 1e-8, 1e3
#: How conversion.json names the integrate-and-fire neurons of QCFS networks (simulation.IF_NEURONS).
IF_NAMES = {"if": "IF neurons", "signed_if": "signed IF neurons"}


def if_name(neuron: str, max_spikes: int) -> str:
    """``"signed IF neurons, bursts of up to 4"``, ``"IF neurons"``, ..."""
    return IF_NAMES[neuron] + (f", bursts of up to {max_spikes}" if max_spikes > 1 else "")


@dataclass
class ConvertConfig:
    """How the ANN of a run is converted and evaluated."""

    run_dir: str
    max_timesteps: int = 32  # evaluated at T = 1, 2, 4, ..., max_timesteps
    dt: float = 0.001
    tau: float | None = 0.1  # synaptic time constant (s); None: no synapse
    normalise: bool = True
    percentile: float = 99.9
    max_rate: float | None = None  # Hz at the percentile; None: 1 / dt (one spike per step)
    # prediction = mean logit over the last ceil(fraction * T) steps; None: 0.5, or 1.0 for QCFS (IF) networks
    readout_fraction: float | None = None
    normalisation_images: int = 256
    batch_size: int = 32
    seed: int = 0
    sweep: bool = True  # also evaluate variants (ReLU: no normalisation, other tau, no synapse; QCFS: other neurons)
    signed: bool = True  # QCFS ANNs: integrate-and-fire neurons with negative spikes (False: plain IF)
    # QCFS ANNs, signed neurons: spikes one neuron may fire in one step (bursts); None: the levels L (at least 2) if
    # signed, else 1
    max_spikes: int | None = None
    data_dir: str | None = None

    def validate(self) -> None:
        resources.check_timesteps(self.max_timesteps)
        checks = [
            (self.dt > 0, f"--dt must be positive, got {self.dt}"),
            (math.isfinite(self.dt) and MIN_DT <= self.dt <= MAX_DT,
             f"--dt must be between {MIN_DT:g} and {MAX_DT:g} seconds, got {self.dt}"),
            (self.tau is None or (self.tau > 0 and math.isfinite(self.tau)),
             f"--tau must be positive (or use --synapse none), got {self.tau}"),
            (self.max_rate is None or (self.max_rate > 0 and math.isfinite(self.max_rate)),
             f"--max-rate must be a positive number of Hz, got {self.max_rate}"),
            (0 < self.percentile <= 100, f"--percentile must be in (0, 100], got {self.percentile}"),
            (self.max_spikes is None or self.max_spikes >= 1,
             f"--max-spikes-per-step must be at least 1, got {self.max_spikes}"),
            (self.signed or self.max_spikes in (None, 1),
             "--max-spikes-per-step above 1 needs signed neurons (drop --no-signed)"),
            (self.readout_fraction is None or 0 < self.readout_fraction <= 1,
             f"--readout-fraction must be in (0, 1], got {self.readout_fraction}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def bursts(self, levels: int) -> int:
        """The spikes a neuron of a QCFS network with ``levels`` levels may fire per step: ``max_spikes``, by
        default ``levels`` (at least 2) for signed neurons, so that at T = 1 the SNN fires each QCFS level in one
        burst (:meth:`SpikingNetwork.compression`), or 1."""
        if self.max_spikes is not None:
            return self.max_spikes
        return api.default_bursts(levels, self.signed)


def _non_finite(dt: float) -> UserError:
    return UserError(f"the SNN converted at --dt {dt:g} has non-finite weights or outputs (its rates overflow "
                     "float32): choose a larger --dt or a lower --max-rate; nothing was written")


def check_finite(snn, logits, dt: float) -> None:
    """Refuse an SNN whose weights or outputs are not finite numbers, before it is written (a NaN model that
    loads and predicts one class would pass for a result)."""
    if not (all(np.isfinite(w.numpy()).all() for w in snn.weights) and np.isfinite(logits).all()):
        raise _non_finite(dt)


def timestep_grid(max_timesteps: int) -> list:
    """1, 2, 4, ... up to and including ``max_timesteps``."""
    grid = [2 ** k for k in range(int(math.log2(max_timesteps)) + 1)]
    return grid if grid[-1] == max_timesteps else grid + [max_timesteps]


def accuracy_over_time(result: dict, labels: np.ndarray, grid: list, fraction: float, neurons: list,
                       dt: float) -> list:
    """Accuracy and per-layer firing rates at each T of ``grid`` from one simulation of max(grid) steps.

    The simulation is causal, so the first T steps of a longer run are a run of T steps (except where levels are
    compressed into fewer steps, :meth:`SpikingNetwork.compression`).
    """
    rows = []
    for t in grid:
        logits = result["logits"][:, :t]
        spikes = layer_spikes(result["spikes"][:, :t])
        rows.append({
            "timesteps": t,
            "accuracy": readout_accuracy(logits, labels, readout_steps(t, fraction)),
            "accuracy_last_step": readout_accuracy(logits, labels, 1),
            "accuracy_all_steps": readout_accuracy(logits, labels, t),
            "spikes_per_image": float(spikes.sum()),
            "firing_rate_hz": firing_rates(spikes, neurons, t, dt),
        })
    return rows


def build_snn(run, ann, config: ConvertConfig, normalise: bool | None = None, tau="config", dt=None,
              signed: bool | None = None, max_spikes: int | None = None, max_rate: float | None = None):
    """Convert ``ann`` into a :class:`SpikingNetwork` over its layer graph, optionally normalised.

    A QCFS ANN gets integrate-and-fire neurons with its thresholds and no
    synapse: signed unless ``signed`` (default ``config.signed``) is False,
    with bursts of up to ``max_spikes`` (default :meth:`ConvertConfig.bursts`).
    The other options (``max_rate`` defaults to ``config.max_rate``) apply to
    ReLU ANNs.
    """
    dt = config.dt if dt is None else dt
    graph = layer_graph.build_graph(ann)
    if graph.thresholds:  # a QCFS ANN: integrate-and-fire neurons, thresholds from the ANN, no filter
        signed = config.signed if signed is None else signed
        bursts = config.bursts(max(n.params["levels"] for n in graph.neurons)) if max_spikes is None else max_spikes
        snn = SpikingNetwork.from_graph(graph, timesteps=config.max_timesteps, dt=dt, seed=config.seed,
                                        **api.qcfs_neurons(graph, signed, bursts))
        return snn, None
    percentiles = None
    if config.normalise if normalise is None else normalise:
        sample = run.batches("train", config.batch_size, config.normalisation_images, config.seed)
        batches = (x for x, _ in sample)
        graph, percentiles = api.normalised(graph, batches, config.percentile,
                                            max_rate or config.max_rate or 1.0 / dt, config.seed)
        if not api.gains_fit_float32(graph):
            raise _non_finite(dt)
    snn = SpikingNetwork.from_graph(graph, timesteps=config.max_timesteps, dt=dt,
                                    tau=config.tau if tau == "config" else tau, seed=config.seed)
    return snn, percentiles


def convert_snn(config: ConvertConfig, overwrite: bool = False, verbose: bool = True) -> dict:
    """Convert the run's ANN, evaluate it over T, write ``snn.*`` and ``conversion.json``."""
    with rundir.locked(Path(config.run_dir), create=False), rundir.replacing(Path(config.run_dir)):
        return _convert_snn(config, overwrite, verbose)


def _over_time(snn, name: str, inputs, labels, grid: list, fraction: float, per_step: bool, verbose: bool,
               check: bool = False) -> dict:
    """One variant's accuracy and firing rates at every T of ``grid`` (``inputs(T)``: the test batches for T);
    ``check``: refuse non-finite logits (the SNN that is written)."""
    began = time.perf_counter()
    # a T at which the levels are compressed is not the start of a longer run, and a compressed longest run
    # is the start of no shorter one: such T are simulated on their own; so is every T of an event run, whose
    # recordings are binned into T frames afresh for each T
    longest = grid[-1]
    prefixes = ([longest] if snn.compressed(longest) or per_step
                else [t for t in grid if not snn.compressed(t)])
    result = simulate_split(snn, inputs(longest), longest, name if verbose else None)
    if check:
        check_finite(snn, result["logits"], snn.dt)
    rows = accuracy_over_time(result, labels, prefixes, fraction, snn.neurons_per_layer(), snn.dt)
    for t in [t for t in grid if t not in prefixes]:
        short = simulate_split(snn, inputs(t), t, f"{name}, T = {t}" if verbose else None)
        rows += accuracy_over_time(short, labels, [t], fraction, snn.neurons_per_layer(), snn.dt)
    rows.sort(key=lambda row: row["timesteps"])
    if verbose:
        print(f"{name:>28}: " + "  ".join(f"T={r['timesteps']} {r['accuracy']:.3f}" for r in rows), flush=True)
    return {"name": name, "dt": snn.dt, "tau": snn.tau, "seconds": time.perf_counter() - began, "by_timesteps": rows}


def _sweep(config: ConvertConfig, snn, qcfs: bool) -> list:
    """The sweep's variants beside the chosen SNN, as ``(name or None, build_snn's changes, normalised)``: for a
    QCFS ANN the IF neurons other than the chosen one (named once built), for a ReLU ANN other settings."""
    if not config.sweep:
        return []
    if qcfs:
        return [(None, dict(signed=signed, max_spikes=max_spikes), False)
                for signed, max_spikes in [(False, 1), (True, 1), (True, config.max_timesteps)]
                if (signed, max_spikes) != (snn.neuron == "signed_if", snn.max_spikes)]
    flipped = "no normalisation" if config.normalise else "normalised"
    # keras-spiking neurons rectify each step's input, so without a synapse the error does not average out
    # over T; more spikes per step (bursts) at the percentile are what help
    bursts = dict(tau=None, max_rate=4 / config.dt, normalise=True)
    alternatives = [(flipped, dict(normalise=not config.normalise)), ("tau 5 ms", dict(tau=0.005)),
                    ("no synapse", dict(tau=None)), ("dt 10 ms", dict(dt=0.01)),
                    ("no synapse, 4 spikes per step at the percentile", bursts)]
    return [(name, change, change.get("normalise", config.normalise)) for name, change in alternatives
            if not (set(change) == {"tau"} and change["tau"] == config.tau)]


def _convert_snn(config: ConvertConfig, overwrite: bool, verbose: bool) -> dict:
    check_keras()
    config.validate()
    run_dir = Path(config.run_dir)
    rundir.require(run_dir, rundir.CONFIG, rundir.ANN_WEIGHTS)
    rundir.prepare_new(run_dir, [SNN_CONFIG, SNN_WEIGHTS, CONVERSION, CONVERSION_PLOT], False, overwrite,
                       resumable=False, stage="convert")
    run = open_run(run_dir, config.data_dir)
    ann = load_ann(run_dir, run.config, len(run.classes))
    labels = run.labels("test")
    test_batches = run.batches("test", config.batch_size)
    with data.explain_bad_images(run.source, run.indices("test")):
        ann_test_accuracy = ann_accuracy(ann, test_batches, labels)
    grid = timestep_grid(config.max_timesteps)
    # an event run's SNN takes each recording one frame per step, binned afresh for every T; an image run's SNN
    # its test images, constant over the steps
    per_step = run.per_step

    def inputs(timesteps: int):
        return run.step_batches("test", config.batch_size, timesteps) if per_step else test_batches

    def evaluate(name, network, **details):
        if verbose:
            print(f"evaluating {name} ({len(variants) + 1}/{len(planned) + 1}) on "
                  f"{len(labels)} test images, T = 1 ... {config.max_timesteps}", flush=True)
        row = _over_time(network, name, inputs, labels, grid, fraction, per_step, verbose, check=not variants)
        return {"name": name, **details} | row

    snn, percentiles = build_snn(run, ann, config)
    qcfs = snn.neuron in IF_NAMES
    fraction = config.readout_fraction or (1.0 if qcfs else 0.5)
    planned = _sweep(config, snn, qcfs)
    snn.readout_steps = readout_steps(config.max_timesteps, fraction)
    variants = []
    variants.append(evaluate(f"converted (QCFS, {if_name(snn.neuron, snn.max_spikes)})" if qcfs else "converted", snn,
                             normalised=config.normalise and not qcfs))
    sample = next(iter(test_batches))
    check = verify(ann, snn, sample[0].numpy(), sample[1].numpy(), None if qcfs else config.max_timesteps)
    if verbose:
        print(format_verification(check))
    for name, change, normalised in planned:
        alternative, _ = build_snn(run, ann, config, **change)
        name = name or f"QCFS, {if_name(alternative.neuron, change['max_spikes'])}"
        variants.append(evaluate(name, alternative, normalised=normalised))
    report = {"ann_test_accuracy": ann_test_accuracy, "config": dataclasses.asdict(config), "neuron": snn.neuron,
              "verify": check,
              "normalisation_percentiles": percentiles, "test_images": int(len(labels)),
              **({"input": "event recordings, binned into T frames for each T, one per step"} if per_step else {}),
              "readout": f"mean logit over the last ceil({fraction} * T) steps; "
                         "accuracy_last_step and accuracy_all_steps give the other read-outs",
              "variants": variants}
    atomic_write_json(run_dir / SNN_CONFIG, snn.get_config())
    save_variables(snn.weights, run_dir / SNN_WEIGHTS)
    atomic_write_json(run_dir / CONVERSION, report)
    plot_accuracy(report, run_dir / CONVERSION_PLOT)
    rundir.record_outputs(run_dir, "convert", [SNN_CONFIG, SNN_WEIGHTS, CONVERSION],
                          [rundir.CONFIG, rundir.SPLIT, rundir.ANN_WEIGHTS])
    return report


def verify(ann, snn, images, labels=None, timesteps: int | None = None) -> dict:
    """Compare an ANN and its converted SNN on the same images, node by node.

    Runs both; for every neuron node of the SNN's graph reports the output of
    the ANN layer it was converted from and the SNN's output averaged over
    ``timesteps`` (in the ANN's units), their mean absolute error and the
    error relative to the mean ANN activation. Nodes are paired by name, not
    by position. ``timesteps`` defaults to the QCFS levels L of a QCFS ANN
    (the T at which the SNN should reproduce it; the fewest of its layers'), else to ``snn.timesteps``.
    Lists every ANN layer that could not be converted (none are skipped
    silently) and, with ``labels``, the accuracy of both and the gap.
    """
    import tensorflow as tf

    names = [n.name for n in snn.neuron_nodes]
    # a neuron node is named after its ReLU / QCFS layer, or "<layer>/relu" for an activation built into a layer
    sources = [ann.get_layer(name.removesuffix("/relu")) for name in names]
    if timesteps is None:
        timesteps = snn.levels or snn.timesteps
    probe = tf.keras.Model(ann.inputs, [layer.output for layer in sources] + [ann.output])
    *ann_activations, ann_logits = probe(images, training=False)
    result = snn.simulate(images, timesteps, return_outputs=True)
    layers = []
    for name, ann_act in zip(names, ann_activations):
        a, b = ann_act.numpy(), result["outputs"][name].numpy()
        error = float(np.mean(np.abs(a - b)))
        layers.append({"layer": name, "ann_mean": float(a.mean()), "snn_mean": float(b.mean()),
                       "mean_abs_error": error, "relative_error": error / max(float(np.mean(np.abs(a))), 1e-12)})
    report = {"timesteps": int(timesteps), "images": int(len(images)), "layers": layers,
              "unconverted": layer_graph.unconvertible_layers(ann)}
    if labels is not None:
        report["ann_accuracy"] = float(np.mean(ann_logits.numpy().argmax(1) == labels))
        report["snn_accuracy"] = readout_accuracy(result["logits"].numpy(), labels, timesteps)
        report["accuracy_gap"] = report["ann_accuracy"] - report["snn_accuracy"]
    return report


def format_verification(report: dict) -> str:
    lines = [f"verify (T={report['timesteps']}, {report['images']} images): layer, ANN mean, SNN mean, relative error"]
    lines += [f"  {r['layer']:>16} {r['ann_mean']:9.4f} {r['snn_mean']:9.4f} {r['relative_error']:7.3f}"
              for r in report["layers"]]
    if "accuracy_gap" in report:
        lines.append(f"  accuracy ANN {report['ann_accuracy']:.3f}, SNN {report['snn_accuracy']:.3f} "
                     f"(all-step read-out), gap {report['accuracy_gap']:+.3f}")
    lines.append("  unconverted layers: " + (", ".join(report["unconverted"]) or "none"))
    return "\n".join(lines)


def plot_accuracy(report: dict, path: Path) -> None:
    """Accuracy vs T of every variant, the chosen setting (the first) marked, the ANN as a line; legend outside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = plt.subplots(figsize=(9, 4.5))
    grid = sorted({r["timesteps"] for v in report["variants"] for r in v["by_timesteps"]})
    for i, variant in enumerate(report["variants"]):
        rows = variant["by_timesteps"]
        chosen = i == 0
        ax.plot([r["timesteps"] for r in rows], [r["accuracy"] for r in rows], marker="o",
                linewidth=3 if chosen else 1.2, markersize=7 if chosen else 4, zorder=3 if chosen else 2,
                label=f"{variant['name']} (chosen)" if chosen else variant["name"])
    ax.axhline(report["ann_test_accuracy"], color="black", linestyle="--",
               label=f"ANN ({100 * report['ann_test_accuracy']:.1f} %)")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(grid))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in grid])
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    atomic_save_figure(fig, path)

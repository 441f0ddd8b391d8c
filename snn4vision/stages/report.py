"""Stage: compare finished runs side by side in one report (``pipelines/report.py``).

For every run the report measures, on the run's own test images: each model's
accuracy (per class too, with the confusion matrix), its operations (ANN
MACs, SNN synaptic operations), its sparsity (spikes per neuron per step,
SOP/MAC, per-layer rates), its latency on this machine (milliseconds per
image) and its energy per inference on every device profile, through the one
costing path of :mod:`snn4vision.costs`. A converted run gives its ANN and its
SNN at each T (and its fine-tuned SNN if it has one); a spiking-transformer run
gives its transformer. :mod:`snn4vision.report_pages` draws the figures and
writes ``report.html``, ``report.md`` and ``report.json``.
"""
from __future__ import annotations

import contextlib
import fcntl
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow as tf

from .. import events, layer_graph, resources, rundir
from ..checkpoints import read_json
from ..costs import (activity_costs, device_table, drive_input_by_events, energy_table, graph_costs, load_devices,
                    network_activity)
from ..memory_costs import model_energies
from ..errors import UserError
from ..evaluation import (classification_metrics, layer_spikes, network_readout_steps, readout_predictions,
                         simulate_split)
from ..report_pages import write_pages
from ..rundir import CONVERSION, FINE_TUNED_CONFIG, load_ann, load_fine_tuned, load_snn, load_trained, open_run
from ..transformers import measure

OUTPUTS = ("report.html", "report.md", "report.json")


@dataclass
class ReportConfig:
    """What :func:`write_report` compares. ``timesteps``: the T of converted SNNs (default: those their conversion
    measured); ``devices``: profile names (default: all); ``timing_images``: the batch timed for latency."""

    runs: list
    out: str
    timesteps: list = field(default_factory=list)
    devices: list = field(default_factory=list)
    profiles: str | None = None
    batch_size: int = 32
    timing_images: int = 32
    data_dir: str | None = None

    def validate(self) -> None:
        if not self.runs:
            raise UserError("no runs given: pass one or more run directories")
        for t in self.timesteps:
            resources.check_timesteps(t)
        for what, value in (("--batch-size", self.batch_size), ("--timing-images", self.timing_images)):
            if value < 1:
                raise UserError(f"{what} must be at least 1, got {value}")
        names = [Path(r).name for r in self.runs]
        if len(set(names)) != len(names):
            raise UserError(f"two runs share the name {max(names, key=names.count)!r}: the report names models by "
                            f"their run folder, so give runs distinct folder names")


def write_report(config: ReportConfig, overwrite: bool = False, verbose: bool = True) -> dict:
    """Measure every run of ``config.runs`` and write the report into ``config.out``; returns ``report.json``'s
    content."""
    config.validate()
    devices = load_devices(config.profiles)
    unknown = [d for d in config.devices if d not in devices]
    if unknown:
        raise UserError(f"unknown device(s) {', '.join(unknown)}: choose from {', '.join(devices)}")
    devices = {name: devices[name] for name in (config.devices or devices)}
    missing = {run_dir: _check_run(Path(run_dir)) for run_dir in config.runs}
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the report")
    present = [name for name in OUTPUTS if (out / name).exists()]
    if present and not overwrite:
        raise UserError(f"{out} already holds {', '.join(present)}: pass --overwrite to replace it, or choose "
                        f"another --out")
    models, runs = [], []
    for run_dir in config.runs:
        if verbose:
            print(f"measuring {run_dir}")
        with reading(Path(run_dir)):
            run_models = _measure_run(Path(run_dir), config, devices)
        models += run_models
        runs.append({"run": Path(run_dir).name, "path": str(run_dir), "models": len(run_models)}
                    | ({"missing": missing[run_dir]} if missing[run_dir] else {}))
    report = {"machine": _machine(), "runs": runs, "devices": device_table(devices),
              "timing": f"best of 3 passes over {config.timing_images} test images, after one warm-up pass",
              "models": models}
    write_pages(report, out)
    if verbose:
        print(f"wrote {out / 'report.html'} ({len(models)} models from {len(runs)} runs)")
    return report


def _check_run(run_dir: Path) -> str | None:
    """Refuse a run that cannot be reported before measuring any (one line naming what it lacks); returns what
    the report will say is missing from a run that has its ANN but no converted SNN (its ANN is still compared)."""
    rundir.require(run_dir, rundir.CONFIG, rundir.CLASSES, rundir.SPLIT, rundir.METRICS)
    if (run_dir / rundir.TRANSFORMER_WEIGHTS).exists():
        return None
    rundir.require(run_dir, rundir.ANN_WEIGHTS)
    if not any((run_dir / name).exists() for name in (rundir.SNN_CONFIG, rundir.SNN_WEIGHTS)):
        missing = (f"no converted SNN ({rundir.SNN_CONFIG}): only its ANN is compared; run pipelines/convert_snn.py "
                   f"--run {run_dir} to compare its SNN")
        print(f"warning: {missing}", file=sys.stderr)
        return missing
    rundir.require(run_dir, rundir.SNN_CONFIG, rundir.SNN_WEIGHTS)  # half an SNN is damage, not absence
    return None


@contextlib.contextmanager
def reading(run_dir: Path) -> Iterator[None]:
    """Read a run without writing to it (a run on a read-only share reports too), refusing only while a stage
    writes into it: a shared lock on its existing ``.lock``, which a writer's exclusive lock excludes."""
    if rundir.holds_lock(run_dir):  # run_all reporting on the run it holds
        yield
        return
    try:
        handle = open(run_dir / rundir.LOCK)
    except OSError:  # no stage ever locked it (or we may not read its lock): nobody to wait for
        handle = None
    if handle is None:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "unknown"
            raise UserError(f"{run_dir} is in use by process {holder} (a stage writing into it): wait for it to "
                            "finish, then report") from None
        yield


def _machine() -> dict:
    return {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "threads": tf.config.threading.get_intra_op_parallelism_threads() or None}


def _latency_ms(call, images: np.ndarray) -> float:
    """Milliseconds per image of ``call(images)``: best of 3 passes after a warm-up."""
    call(images)
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        out = call(images)
        np.asarray(out if not isinstance(out, dict) else out["logits"])  # wait for the result
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / len(images)


def _seconds_per_epoch(metrics: dict) -> float | None:
    seconds = [h["seconds"] for h in metrics.get("history", []) if h.get("seconds") is not None]
    return float(np.mean(seconds)) if seconds else None


def _scores(labels, predictions, classes) -> dict:
    scores = classification_metrics(labels, predictions, classes)
    return {"accuracy": scores["accuracy"], "per_class_accuracy": scores["per_class_accuracy"],
            "confusion_matrix": scores["confusion_matrix"]}


def _costs(records: list, timesteps: int, dt: float, devices: dict, levels: dict | None = None) -> dict:
    """Operations, sparsity and joules per device of one measured model (the energy stage's counting), under
    the compute-only (``energy_J``, ``ann_J``) and memory-aware (``energy_J_memory``, ``ann_J_memory``) models."""
    costs, operations, rates = activity_costs(records, timesteps, dt)
    total = energy_table(costs, operations, rates, devices)[-1]
    memory = {d: model_energies(records, timesteps, device, levels)["memory_aware"] for d, device in devices.items()}
    neurons = [r for r in records if r["kind"] == "neurons"]
    spikes = sum(r["spikes"] for r in neurons)
    size = sum(r["neurons"] for r in neurons)
    return {"ann_macs": total["ann_macs"], "synaptic_ops": total["snn_sops"] + total["snn_macs"],
            "sop_per_mac": total["sop_per_mac"], "spikes_per_image": float(spikes),
            "spikes_per_neuron_per_step": float(spikes / (size * timesteps)) if size else None,
            "layer_rates": {r["name"]: float(r["rate"]) for r in neurons},
            "ann_J": {d: total[f"ann_J_{d}"] for d in devices}, "energy_J": {d: total[f"snn_J_{d}"] for d in devices},
            "ann_J_memory": {d: m["ann_J"] for d, m in memory.items()},
            "energy_J_memory": {d: m["snn_J"] for d, m in memory.items()}}


def _ann_costs(run_dir: Path, ann, devices: dict) -> dict:
    """The ANN's operations and joules, which do not depend on spikes: read off a run of one silent step of its
    SNN, or of its layer graph where the run has no SNN."""
    if (run_dir / rundir.SNN_CONFIG).exists():
        snn = load_snn(run_dir)
        return _costs(snn.activity(np.zeros(len(snn.neuron_nodes)), 1), 1, snn.dt, devices, snn.layer_levels())
    graph = layer_graph.build_graph(ann)
    neurons = [(n.name, int(np.prod(n.shape))) for n in graph.neurons]
    records = network_activity(graph_costs(graph.nodes, graph.output), neurons, np.zeros(len(neurons)), 1, False)
    return _costs(records, 1, 0.001, devices, {n.name: n.params.get("levels") for n in graph.neurons})


def _measure_run(run_dir: Path, config: ReportConfig, devices: dict) -> list:
    run = open_run(run_dir, config.data_dir)
    metrics = read_json(run_dir / rundir.METRICS)
    labels = run.labels("test")
    batches = run.batches("test", config.batch_size)
    timing = np.concatenate([x for x, _ in run.batches("test", config.timing_images, config.timing_images)])
    base = {"run": run_dir.name, "architecture": run.config.architecture,
            "train_s_per_epoch": _seconds_per_epoch(metrics)}
    if run.config.spiking:
        run.config.check_transformer_memory(config.batch_size, training=False)
        model = load_trained(run_dir, run.config, len(run.classes))
        result = measure(model, batches)
        binning = run.source.binning if run.source.kind == "events" else None
        if binning is not None and binning.frames is not None:  # costed as the energy stage costs it
            drive_input_by_events(result["layers"], events.input_events(batches, binning, binning.frames) / len(labels))
        row = base | {"model": f"{run.config.architecture} (directly trained SNN)", "kind": "transformer",
                      "timesteps": model.timesteps, "parameters": int(model.count_params()),
                      "ms_per_image": _latency_ms(tf.function(lambda x: model(x, training=False)), timing)}
        costs = _costs(result["layers"], model.timesteps, 0.001, devices)
        return [row | _scores(labels, result["logits"].argmax(axis=1), run.classes) | costs]
    ann = load_ann(run_dir, run.config, len(run.classes))
    ann_logits = np.concatenate([ann(x, training=False).numpy() for x, _ in batches])
    reference = _ann_costs(run_dir, ann, devices)
    parameters = int(ann.count_params())
    rows = [base | {"model": f"{run.config.architecture} ANN", "kind": "ann", "timesteps": None,
                    "parameters": parameters,
                    "ms_per_image": _latency_ms(tf.function(lambda x: ann(x, training=False)), timing),
                    "ann_macs": reference["ann_macs"], "synaptic_ops": None, "sop_per_mac": None,
                    "spikes_per_image": None, "spikes_per_neuron_per_step": None, "layer_rates": None,
                    "energy_J": reference["ann_J"], "ann_J": reference["ann_J"],
                    "energy_J_memory": reference["ann_J_memory"], "ann_J_memory": reference["ann_J_memory"]}
            | _scores(labels, ann_logits.argmax(axis=1), run.classes)]
    if not (run_dir / rundir.SNN_CONFIG).exists():  # an ANN-only run (_check_run said so)
        return rows
    conversion = read_json(run_dir / CONVERSION)
    steps = config.timesteps or [r["timesteps"] for r in conversion["variants"][0]["by_timesteps"]]
    kinds = [("converted SNN", load_snn)] + ([("fine-tuned SNN", load_fine_tuned)]
                                             if (run_dir / FINE_TUNED_CONFIG).exists() else [])
    for name, load in kinds:
        for t in steps:
            snn = load(run_dir, t)
            # an event run's SNN takes the recordings one frame per step, as in the convert and energy stages
            frames = run.step_batches("test", config.batch_size, t)
            result = simulate_split(snn, batches if frames is None else frames, t)
            predictions = readout_predictions(result["logits"], network_readout_steps(snn, t))
            simulate = tf.function(lambda x, snn=snn, t=t: snn.simulate(x, t)["logits"])
            records = snn.activity(layer_spikes(result["spikes"]), t, layer_spikes(result["events"]))
            if frames is not None:
                drive_input_by_events(records, events.input_events(frames, run.source.binning, t) / len(labels),
                                      snn.layer_costs())
            costs = _costs(records, t, snn.dt, devices, snn.layer_levels())
            rows.append(base | {"model": f"{run.config.architecture} {name}", "kind": "snn", "timesteps": t,
                                "parameters": parameters, "ms_per_image": _latency_ms(simulate, timing),
                                "train_s_per_epoch": None}
                        | _scores(labels, predictions, run.classes) | costs)
    return rows


"""Stage: write a run's SNN as a NIR graph for neuromorphic toolchains (``pipelines/export_nir.py``).

The translation lives in :mod:`snn4vision.nir_io`; this stage picks the run's
converted or fine-tuned SNN, applies the approximation the user asked for,
writes the file atomically and measures, on the run's test images, what the
exported network keeps of the SNN's accuracy. With ``check="sinabs"`` the
written file is also run in sinabs, a simulator we did not write, and its
predictions and per-layer spike counts are compared with ours.
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

import nir
import numpy as np

from .. import resources, rundir
from ..checkpoints import atomic_write_json
from ..errors import UserError
from ..evaluation import network_readout_steps, readout_accuracy, readout_predictions, simulate_split
from ..nir_io import nir_problems, run_in_sinabs, to_nir, write_nir
from ..rundir import NIR_FILE, NIR_REPORT, load_snn, open_run

MODELS = ("converted", "fine-tuned")
CHECKS = ("none", "sinabs")


@dataclass
class ExportConfig:
    """What :func:`export_nir` writes. ``out``: the NIR file (default ``RUN/snn.nir``); ``approximate``: export
    plain IF neurons with one spike per step where the SNN's neurons fire signed spikes or bursts;
    ``check_images``: test images for the sinabs check (None: all)."""

    run_dir: str
    model: str = "converted"
    timesteps: int | None = None
    out: str | None = None
    approximate: bool = False
    check: str = "none"
    check_images: int | None = None
    batch_size: int = 32
    data_dir: str | None = None

    def validate(self) -> None:
        if self.model not in MODELS:
            raise UserError(f"unknown model {self.model!r}: use {' or '.join(MODELS)}")
        if self.check not in CHECKS:
            raise UserError(f"unknown check {self.check!r}: use {' or '.join(CHECKS)}")
        if self.timesteps is not None:
            resources.check_timesteps(self.timesteps)
        if self.check_images is not None and self.check_images < 1:
            raise UserError(f"--check-images must be at least 1, got {self.check_images}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.check == "sinabs" and importlib.util.find_spec("sinabs") is None:
            raise UserError('--check sinabs needs sinabs and torch: pip install -e ".[nir]"')


def export_nir(config: ExportConfig, overwrite: bool = False, verbose: bool = True) -> dict:
    """Write ``config.run_dir``'s SNN as NIR and ``nir_export.json`` beside its results; returns the report."""
    config.validate()
    run_dir = Path(config.run_dir)
    with rundir.locked(run_dir, create=False), rundir.replacing(run_dir):
        return _export(config, run_dir, overwrite, verbose)


#: The config and weights file of each model a run may export.
MODEL_FILES = {"converted": [rundir.SNN_CONFIG, rundir.SNN_WEIGHTS],
               "fine-tuned": [rundir.FINE_TUNED_CONFIG, rundir.FINE_TUNED_WEIGHTS]}


def _load(config: ExportConfig, run_dir: Path, **overrides):
    """The run's SNN, with ``overrides`` of its saved config (another neuron, say)."""
    return load_snn(run_dir, config.timesteps, *MODEL_FILES[config.model], **overrides)


def _export(config: ExportConfig, run_dir: Path, overwrite: bool, verbose: bool) -> dict:
    rundir.require(run_dir, rundir.CONFIG, rundir.SPLIT)
    out = Path(config.out) if config.out else run_dir / NIR_FILE
    if out.is_dir():
        raise UserError(f"--out {out} is a directory: give the path of the .nir file to write")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist: create it first")
    own = rundir.owned_name(run_dir, out)
    if own is not None and own != NIR_FILE and rundir.written_by(run_dir, own) != "export_nir":
        raise UserError(f"--out {out} is {run_dir}'s own {own}, which an export never replaces: give another "
                        f"--out, such as {run_dir / NIR_FILE}")
    snn = _load(config, run_dir)
    problems = nir_problems(snn)
    changes = []
    exported = snn
    if problems and config.approximate:
        overrides = {"max_spikes": 1} | ({"neuron": "if"} if snn.neuron == "signed_if" else {})
        changes = ([f"{snn.neuron} neurons exported as plain IF neurons"] if "neuron" in overrides else []) + (
            [f"bursts of up to {snn.max_spikes} spikes per step exported as single spikes"]
            if snn.max_spikes > 1 else [])
        exported = _load(config, run_dir, **overrides)
        problems = nir_problems(exported)
    if problems:
        raise UserError(f"{run_dir}'s {config.model} SNN cannot be written as NIR: " + "; ".join(problems))
    in_run = out.resolve().parent == run_dir.resolve()
    outputs = [NIR_REPORT] + ([out.name] if in_run else [])
    if not in_run and out.exists() and not overwrite:
        raise UserError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    run = open_run(run_dir, config.data_dir)
    timesteps = exported.timesteps
    graph = to_nir(exported, timesteps)
    rundir.prepare_new(run_dir, outputs, False, overwrite, resumable=False, stage="export_nir")
    write_nir(out, graph)
    labels = run.labels("test")
    steps = network_readout_steps(exported, timesteps)
    ours = simulate_split(exported, run.batches("test", config.batch_size), timesteps,
                          label="exported SNN" if verbose else None)
    report = {"config": asdict(config), "file": str(out), "model": config.model, "timesteps": timesteps,
              "dt": exported.dt, "neuron": exported.neuron, "approximations": changes,
              "nodes": len(graph.nodes), "edges": len(graph.edges),
              "node_types": _count_types(graph), "test_images": int(len(labels)),
              "accuracy": readout_accuracy(ours["logits"], labels, steps),
              "spikes_per_image": float(ours["spikes"].sum(axis=(1, 2)).mean())}
    if changes:  # what the approximation costs: the SNN as converted, on the same images
        original = simulate_split(snn, run.batches("test", config.batch_size), timesteps,
                                  label="SNN as converted" if verbose else None)
        report["accuracy_before_approximation"] = readout_accuracy(original["logits"], labels, steps)
    if config.check == "sinabs":
        report["sinabs"] = _sinabs_agreement(out, run, config, exported, ours, labels, steps)
    atomic_write_json(run_dir / NIR_REPORT, report)
    rundir.record_outputs(run_dir, "export_nir", outputs, MODEL_FILES[config.model])
    if verbose:
        print(format_report(report))
    return report


def _count_types(graph: nir.NIRGraph) -> dict:
    counts = {}
    for node in graph.nodes.values():
        counts[type(node).__name__] = counts.get(type(node).__name__, 0) + 1
    return dict(sorted(counts.items()))


def _sinabs_agreement(path: Path, run, config: ExportConfig, exported, ours: dict, labels, steps: int) -> dict:
    """Run the written file in sinabs on the test images and compare with our simulator."""
    indices = run.sample("test", config.check_images, seed=0)
    rows = [list(run.indices("test")).index(i) for i in indices]  # where each checked image is in ``ours``
    images = np.concatenate([x for x, _ in run.batches("test", config.batch_size, config.check_images, seed=0)])
    theirs = run_in_sinabs(nir.read(path), images, exported.timesteps, config.batch_size)
    our_logits, our_spikes = ours["logits"][rows], ours["spikes"][rows].sum(axis=1)  # (images, neuron layers)
    their_spikes = np.stack([theirs["spikes"][node.name] for node in exported.neuron_nodes], axis=1)
    predictions = (readout_predictions(our_logits, steps), readout_predictions(theirs["logits"], steps))
    return {"images": int(len(images)), "framework": theirs["framework"],
            "same_predictions": float(np.mean(predictions[0] == predictions[1])),
            "accuracy": float(np.mean(predictions[1] == labels[rows])),
            "max_abs_logit_difference": float(np.abs(our_logits - theirs["logits"]).max()),
            "layers_with_equal_spike_counts": float(np.mean(np.all(our_spikes == their_spikes, axis=0))),
            "images_with_equal_spike_counts": float(np.mean(np.all(our_spikes == their_spikes, axis=1))),
            "max_spike_count_difference": int(np.abs(our_spikes - their_spikes).max()),
            "spikes_differing": float(np.abs(our_spikes - their_spikes).sum() / max(our_spikes.sum(), 1.0)),
            "spikes_per_image": float(their_spikes.sum(axis=1).mean())}


def format_report(report: dict) -> str:
    lines = [f"wrote {report['file']}: {report['nodes']} NIR nodes "
             f"({', '.join(f'{n} {k}' for k, n in report['node_types'].items())}), T = {report['timesteps']}"]
    for change in report["approximations"]:
        lines.append(f"approximation: {change}")
    if "accuracy_before_approximation" in report:
        lines.append(f"test accuracy {report['accuracy_before_approximation']:.1%} as converted, "
                     f"{report['accuracy']:.1%} as exported ({report['test_images']} images)")
    else:
        lines.append(f"test accuracy {report['accuracy']:.1%} ({report['test_images']} images), exact")
    if "sinabs" in report:
        s = report["sinabs"]
        lines.append(f"sinabs {s['framework']} on {s['images']} images: same predictions {s['same_predictions']:.1%}, "
                     f"accuracy {s['accuracy']:.1%}, per-layer spike counts equal on "
                     f"{s['images_with_equal_spike_counts']:.1%} of images (largest difference "
                     f"{s['max_spike_count_difference']}, {s['spikes_differing']:.2e} of all spikes), largest logit "
                     f"difference "
                     f"{s['max_abs_logit_difference']:.2g}")
    return "\n".join(lines)

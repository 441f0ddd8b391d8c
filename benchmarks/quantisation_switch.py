"""Benchmark: where quantising costs accuracy, at the end of a QCFS run's ReLU warm-up.

Usage: python benchmarks/quantisation_switch.py RUN_DIR [RUN_DIR ...] [--levels LAYER=L ...] [--split test]
       [--out FILE.md]

Each RUN_DIR is a trained QCFS run with ``--distill`` (the default), whose training saved the network as the
ReLU warm-up left it (``checkpoints/ann/teacher.weights.h5``). Inference only: every QCFS layer gets the
threshold of least quantisation error on 256 training images (as training does at the switch), then the
split's accuracy is measured with each layer quantised alone and with all of them
(:func:`snn4vision.quantisation.quantisation_sensitivity`). ``--levels`` tries other levels for some layers
(for example ``--levels block1_qcfs2=4``). Several runs (the folds of a setting) are summarised layer by
layer with the mean cost. Prints markdown; ``--out`` also writes it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from snn4vision import rundir  # noqa: E402
from snn4vision.checkpoints import atomic_write_text, load_weights  # noqa: E402
from snn4vision.cli.training_flags import layer_level, layer_levels  # noqa: E402
from snn4vision.errors import UserError  # noqa: E402
from snn4vision.quantisation import quantisation_sensitivity  # noqa: E402
from snn4vision.stages.training import TEACHER, stage_name, switch_calibration  # noqa: E402


def measure(run_dir: Path, levels: dict, split: str):
    run = rundir.open_run(run_dir)
    config = run.config
    if config.activation != "qcfs" or not config.distill:
        raise UserError(f"{run_dir} is not a QCFS run with --distill, so it kept no ReLU warm-up network to "
                        "quantise: use a run of the default main job")
    teacher = run_dir / rundir.CHECKPOINTS / stage_name(config) / TEACHER
    if not teacher.is_file():
        raise UserError(f"{teacher} is missing: the run has not reached the end of its ReLU warm-up")
    model = rundir.build_model(config, len(run.classes), weights="none")
    load_weights(model, teacher, what="ReLU warm-up network")
    return quantisation_sensitivity(model, switch_calibration(run), run.batches(split, 64), levels, seed=config.seed)


def summary(runs: list, results: list, levels: dict, split: str) -> str:
    lines = ["# Quantisation at the end of the ReLU warm-up", "",
             f"`benchmarks/quantisation_switch.py`: {len(runs)} run(s), {split} split, inference only"
             + (f"; levels tried: {', '.join(f'{k}={v}' for k, v in levels.items())}" if levels else "") + ".", "",
             "| run | ReLU network | all layers quantised |", "|---|---|---|"]
    lines += [f"| {run} | {100 * r.relu_accuracy:.1f} | {100 * r.quantised_accuracy:.1f} |"
              for run, r in zip(runs, results)]
    lines += ["", "Each layer quantised alone (every other layer a ReLU): the accuracy lost, in points, per run "
              "and on average, beside the SOP/MAC that one spike per neuron of the layer adds in the SNN "
              "(where spikes are cheap, more levels cost little).", "",
              "| layer | levels | SOP/MAC of one spike per neuron | "
              + " | ".join(f"run {i}" for i in range(len(runs))) + " | mean |",
              "|---|---|---|" + "---|" * (len(runs) + 1)]
    for i, first in enumerate(results[0].layers):
        lost = [100 * (r.relu_accuracy - r.layers[i].accuracy) for r in results]
        lines.append(f"| {first.layer} | {first.levels} | {first.spike_cost:.3g} | "
                     + " | ".join(f"{c:.1f}" for c in lost) + f" | {np.mean(lost):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--levels", nargs="+", default=[], type=layer_level, metavar="LAYER=L",
                        help="other levels for some QCFS layers, as run_all.py's --layer-levels")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    try:
        levels = layer_levels(args.levels, "--levels")
        results = [measure(run, levels, args.split) for run in args.runs]
        shapes = [[(s.layer, s.levels) for s in r.layers] for r in results]
        if any(shape != shapes[0] for shape in shapes):
            raise UserError("the runs have different QCFS layers or levels: summarise runs of one setting at a time "
                            "(or give --levels for every layer that differs)")
        text = summary([str(r) for r in args.runs], results, levels, args.split)
        if args.out:
            atomic_write_text(args.out, text)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(text, end="")


if __name__ == "__main__":
    main()

"""Stratified K-fold cross-validation of a setting, and paired comparisons of settings on the same folds.

Run the folds of a setting (each image of the dataset is tested exactly once over the K runs; a fold that was
interrupted resumes, a finished one is skipped; flags after the known ones go to the pipeline script):

    .venv/bin/python benchmarks/cross_validation.py run --dataset ../shared/data/ucmerced --runs-dir runs/cv/default
    .venv/bin/python benchmarks/cross_validation.py run --dataset ../shared/data/ucmerced --runs-dir runs/cv/relu \
        --ann-only --activation relu

Gather them, with 95 % intervals (``snn4vision.crossval``), into ``benchmarks/results/cross_validation.{md,json}``:

    .venv/bin/python benchmarks/cross_validation.py report --setting default=runs/cv/default \
        --setting relu=runs/cv/relu --pair default:relu

A setting gathered earlier is read back from the results file that keeps it, fold by fold, where its run
directories are gone: ``--setting default=benchmarks/results/cross_validation.json#default``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from snn4vision import crossval  # noqa: E402
from snn4vision.errors import UserError  # noqa: E402
from snn4vision.checkpoints import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def run_folds(args: argparse.Namespace, extra: list) -> None:
    script = ROOT / "pipelines" / ("train_ann.py" if args.ann_only else "run_all.py")
    final = "metrics.json" if args.ann_only else "summary.json"
    for fold in args.only or range(args.folds):
        run_dir = Path(args.runs_dir) / f"fold{fold}"
        if (run_dir / final).is_file():
            print(f"fold {fold}: done earlier ({run_dir})", flush=True)
            continue
        command = [sys.executable, str(script), "--run", str(run_dir), "--dataset", args.dataset, "--seed",
                   str(args.seed), "--folds", str(args.folds), "--fold", str(fold), *extra]
        if (run_dir / "config.json").is_file():
            command.append("--resume")
        began = time.perf_counter()
        print(f"fold {fold}: {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL if args.quiet else None)
        print(f"fold {fold}: {time.perf_counter() - began:.0f} s", flush=True)


def _interval(i: dict, scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * i['mean']:.{digits}f} [{scale * i['low']:.{digits}f}, {scale * i['high']:.{digits}f}]"


def report(args: argparse.Namespace) -> None:
    malformed = [s for s in args.setting if "=" not in s]
    if malformed:
        raise UserError(f"--setting {malformed[0]!r} names no source: give NAME=RUNS_DIR or NAME=FILE.json#SETTING")
    settings = {name: crossval.gather(source) for name, source in (s.split("=", 1) for s in args.setting)}
    out = {"settings": {name: crossval.summarise(folds, name) for name, folds in settings.items()}, "pairs": {}}
    lines = ["# Cross-validation", "", "Stratified K-fold cross-validation (`run_all.py --folds K --fold i`, "
             "`benchmarks/cross_validation.py`): every image is tested exactly once over the K runs. Intervals are "
             "95 %: Wilson's for the pooled accuracy (test-sample noise of these K networks), Student's t over the "
             "folds for the fold means and for paired differences (training noise included).", "",
             "| setting | K | images | ANN pooled | SNN pooled | ANN fold mean | SNN fold mean | SNN - ANN "
             "(points) | SNN/ANN energy, loihi (compute-only) | SNN/ANN energy, 45nm (compute-only) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in out["settings"].items():
        cell = {key: _interval(v) for key, v in s["fold_mean"].items()}
        pooled = {key: _interval(v) for key, v in s["pooled"].items()}
        energy = {d: _interval(v, 1.0, 2) for d, v in s["energy"].items()}
        lines.append(f"| {name} | {s['folds']} | {s['images']} | {pooled['ann']} | {pooled.get('snn', '-')} | "
                     f"{cell['ann']} | {cell.get('snn', '-')} | {cell.get('gap', '-')} | "
                     f"{energy.get('loihi', '-')} | {energy.get('45nm', '-')} |")
    if args.pair:
        lines += ["", "Paired on the same folds (A minus B, points; energy ratio difference):", "",
                  "| A | B | ANN | SNN | SNN - ANN gap | A's SNN - B's ANN | loihi ratio |", "|---|---|---|---|---|---|---|"]
    for pair in args.pair:
        a, b = pair.split(":")
        diff = crossval.compare(settings[a], settings[b])
        out["pairs"][pair] = diff
        cell = {key: _interval(v) for key, v in diff.items() if key != "energy"}
        loihi = _interval(diff["energy"]["loihi"], 1.0, 2) if "loihi" in diff["energy"] else "-"
        lines.append(f"| {a} | {b} | {cell['ann']} | {cell.get('snn', '-')} | {cell.get('gap', '-')} | "
                     f"{cell.get('snn_vs_ann', '-')} | {loihi} |")
    lines += ["", "Per fold:", "", "| setting | fold | ANN | SNN | T | loihi | run |", "|---|---|---|---|---|---|---|"]
    for name, s in out["settings"].items():
        for r in s["per_fold"]:
            snn = f"{100 * r['snn']:.1f}" if r["snn"] is not None else "-"
            loihi = f"{r['energy']['loihi']:.3f}" if r["energy"] and "loihi" in r["energy"] else "-"
            lines.append(f"| {name} | {r['fold']} | {100 * r['ann']:.1f} | {snn} | {r['timesteps'] or '-'} | "
                         f"{loihi} | `{r['run']}` |")
    atomic_write_json(RESULTS / "cross_validation.json", out)
    atomic_write_text(RESULTS / "cross_validation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) the K folds of one setting")
    run.add_argument("--dataset", required=True)
    run.add_argument("--runs-dir", required=True)
    run.add_argument("--folds", type=int, default=5)
    run.add_argument("--only", type=int, nargs="+", help="these folds only")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--ann-only", action="store_true", help="train the ANN only (train_ann.py), not run_all.py")
    run.add_argument("--quiet", action="store_true")
    gather = commands.add_parser("report", help="gather settings and paired comparisons")
    gather.add_argument("--setting", action="append", required=True, metavar="NAME=RUNS_DIR",
                        help="a setting's folder of fold runs, or FILE.json#SETTING: a setting a report kept (its "
                             "run directories may be gone)")
    gather.add_argument("--pair", action="append", default=[], metavar="A:B")
    args, extra = parser.parse_known_args()
    if args.command == "run":
        run_folds(args, extra)
    else:
        if extra:
            parser.error(f"unknown arguments {extra}")
        try:
            report(args)
        except UserError as exc:
            sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()

"""Benchmark: the seeds' model comparison reproduced on UC Merced with our runs.

Usage:
  python benchmarks/model_comparison.py RUN [RUN ...]

Each RUN is a finished run directory: run_all.py (VGG-16, ResNet-18) or
train_spiking_transformer.py (Spikformer, Spike-driven Transformer) on the
same dataset and seed. The runs are measured by pipelines/report.py's library
function (snn4vision.stages.report.write_report) on their own test images; the
comparison keeps every ANN and transformer and each SNN at its chosen T (the
least T within 1 point of its best accuracy).

Results: benchmarks/results/model_comparison.{md,json,html} (the HTML is the
whole report, with every T and the figures); with --screenshot PNG, the top of
the page as headless Chromium (Debian's chromium package) draws it.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snn4vision  # noqa: E402,F401

from snn4vision.checkpoints import atomic_write_json, atomic_write_text  # noqa: E402
from snn4vision.stages.report import ReportConfig, write_report  # noqa: E402
from snn4vision.report_pages import chosen, label, millijoules, recommendations  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEVICES = ("gpu", "loihi", "spinnaker2", "45nm")


def _cell(value, spec):
    return "–" if value is None else spec.format(value)


def table(report: dict) -> str:
    lines = ["| model | T | test accuracy | training s / epoch | parameters | ANN MACs | synaptic ops | "
             "spikes / neuron / step | SOP / MAC | ms / image | " + " | ".join(f"{d} mJ" for d in DEVICES) + " |",
             "|" + "---|" * (10 + len(DEVICES))]
    for m in chosen(report["models"]):
        lines.append(" | ".join([
            f"| {label(m)}", _cell(m["timesteps"], "{:d}"), f"{100 * m['accuracy']:.1f} %",
            _cell(m["train_s_per_epoch"], "{:.0f}"), f"{m['parameters']:,d}", f"{m['ann_macs'] / 1e6:.1f} M",
            _cell(m["synaptic_ops"] and m["synaptic_ops"] / 1e6, "{:.1f} M"),
            _cell(m["spikes_per_neuron_per_step"], "{:.3f}"), _cell(m["sop_per_mac"], "{:.2f}"),
            f"{m['ms_per_image']:.1f}"] + [millijoules(m["energy_J"][d]) for d in DEVICES]) + " |")
    advice = [f"- {r['device']}: {r['model']} ({100 * r['accuracy']:.1f} %, {millijoules(r['energy_J'])} mJ)"
              for r in recommendations(report)]
    return "\n".join(lines + ["", "Least energy within 1 point of the best accuracy:", ""] + advice) + "\n"


def screenshot(page: Path, png: Path, width: int = 1900, height: int = 2600) -> None:
    """The top ``height`` pixels of ``page`` at ``width`` pixels wide, drawn by headless Chromium."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--screenshot", type=Path, help="also draw the top of the page into this PNG")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        report = write_report(ReportConfig(args.runs, out))
        shutil.copyfile(Path(out) / "report.html", RESULTS / "model_comparison.html")
    machine = report["machine"]
    text = (f"# Model comparison on UC Merced (seed 0, 210 test images, {machine['processor']}, 2 cores)\n\n"
            f"Runs: {', '.join(r['path'] for r in report['runs'])}. Latency: {report['timing']}.\n\n" + table(report))
    atomic_write_text(RESULTS / "model_comparison.md", text)
    atomic_write_json(RESULTS / "model_comparison.json", report)
    if args.screenshot:
        screenshot(RESULTS / "model_comparison.html", args.screenshot)
    print(text)


if __name__ == "__main__":
    main()

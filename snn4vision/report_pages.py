"""The pages of a run comparison: figures, ``report.html`` (self-contained), ``report.md`` and ``report.json``.

Everything here works from the report's JSON (:func:`snn4vision.stages.report.write_report` builds it), so a page can be
redrawn without measuring again. Figures are drawn with matplotlib's object API (no pyplot, no display) and
embedded in the HTML as PNG data, so the page needs no network and no other file; it has no script.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .checkpoints import strict_json
from .errors import write_failure

#: The table's columns: (key in a model's JSON, heading, format).
COLUMNS = [
    ("model", "model", "{}"),
    ("run", "run", "{}"),
    ("timesteps", "T", "{:d}"),
    ("accuracy", "test accuracy", "{:.1%}"),
    ("parameters", "parameters", "{:,d}"),
    ("ann_macs", "ANN MACs", "{:,.0f}"),
    ("synaptic_ops", "SNN synaptic ops", "{:,.0f}"),
    ("spikes_per_neuron_per_step", "spikes / neuron / step", "{:.3f}"),
    ("sop_per_mac", "SOP / MAC", "{:.3f}"),
    ("ms_per_image", "ms / image (this machine)", "{:.2f}"),
    ("train_s_per_epoch", "training s / epoch", "{:.1f}"),
]
FIGURES = {
    "accuracy_vs_timesteps.png": "Test accuracy against T for every SNN",
    "accuracy_vs_energy.png": "Test accuracy against energy per inference (compute-only model) on each device (log "
                              "scale); ANNs as "
                              "dashed lines at their energy",
    "firing_rates.png": "Spikes per neuron per step in each neuron layer (each SNN at its chosen T)",
    "per_class_accuracy.png": "Per-class test accuracy (each ANN and each SNN at its chosen T)",
    "confusion_matrices.png": "Confusion matrices (rows: true class, columns: predicted)",
}
#: An SNN's chosen T: the least T within this much accuracy of its best T.
WITHIN = 0.01
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }
th { background: #eee; } td:first-child, td:nth-child(2) { text-align: left; }
tr.ann td { background: #f4f4ff; } tr.chosen td { font-weight: bold; }
figure { margin: 1.5em 0; page-break-inside: avoid; } figure img { max-width: 100%; }
@media print { body { margin: 0.5cm; } }
"""


def format_value(value, spec: str) -> str:
    """A table cell's text; ``"–"`` for a value that does not apply."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return spec.format(value)


def millijoules(joules) -> str:
    """Joules shown in millijoules: three significant digits, whole numbers from 100 mJ up."""
    mj = None if joules is None else 1e3 * joules
    return format_value(mj, "{:,.0f}" if mj is not None and mj >= 100 else "{:.3g}")


def chosen(models: list) -> list:
    """The models a reader compares: every ANN and transformer, and each SNN at its chosen T (the least T
    within :data:`WITHIN` of its best accuracy)."""
    picked, groups = [], {}
    for m in models:
        if m["kind"] == "snn":
            groups.setdefault((m["run"], m["model"]), []).append(m)
        else:
            picked.append(m)
    for rows in groups.values():
        best = max(r["accuracy"] for r in rows)
        picked.append(min((r for r in rows if r["accuracy"] >= best - WITHIN), key=lambda r: r["timesteps"]))
    return picked


def label(m: dict) -> str:
    return f"{m['run']}: {m['model']}" + (f" T={m['timesteps']}" if m["kind"] == "snn" else "")


def plain(text) -> str:
    """``text`` for a matplotlib string, drawn as written: a name holding ``$...$`` is not math text (which can
    fail to parse and stop the report) but dollar signs."""
    return str(text).replace("$", r"\$")


_MARKDOWN = re.compile(r"([\\`*_\[\]|~$])")


def markdown_text(text) -> str:
    """``text`` for ``report.md``, shown as written: its Markdown punctuation escaped and its HTML (which Markdown
    passes through to the page) as entities."""
    return html.escape(_MARKDOWN.sub(r"\\\1", str(text)), quote=False)


def notes(report: dict) -> list:
    """One line per run that lacks a model the report would compare (an ANN-only run: no converted SNN)."""
    return [f"{r['run']}: {r['missing']}" for r in report.get("runs", []) if r.get("missing")]


def energy_model(report: dict) -> str:
    """The energy model the recommendation uses: memory-aware where every model has it, else compute-only
    (a report.json written before issue 29)."""
    return "memory-aware" if all("energy_J_memory" in m for m in report["models"]) else "compute-only"


def recommendations(report: dict) -> list:
    """Per device: the least-energy model within 1 point of the best accuracy of the chosen models, by
    :func:`energy_model`'s joules."""
    models = chosen(report["models"])
    best = max(m["accuracy"] for m in models)
    good = [m for m in models if m["accuracy"] >= best - 0.01]
    which = energy_model(report)
    key = "energy_J_memory" if which == "memory-aware" else "energy_J"
    lines = []
    for device in report["devices"]:
        name = device["name"]
        pick = min(good, key=lambda m: m[key][name])
        lines.append({"device": name, "model": label(pick), "accuracy": pick["accuracy"],
                      "energy_J": pick[key][name], "energy_model": which})
    return lines


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------
def _accuracy_vs_timesteps(models: list) -> Figure:
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    groups = {}
    for m in models:
        if m["kind"] != "ann":
            groups.setdefault(f"{m['run']}: {m['model']}", []).append(m)
    for name, rows in groups.items():
        rows = sorted(rows, key=lambda r: r["timesteps"])
        ax.plot([r["timesteps"] for r in rows], [100 * r["accuracy"] for r in rows], "o-", label=plain(name))
    ax.set_xscale("log", base=2)
    steps = sorted({m["timesteps"] for m in models if m["timesteps"]})
    ax.set_xticks(steps, [str(t) for t in steps])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=7, loc="lower right")
    else:  # ANN-only runs
        ax.text(0.5, 0.5, "no SNN in these runs", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def _accuracy_vs_energy(models: list, devices: list) -> Figure:
    columns = min(4, len(devices))
    rows = math.ceil(len(devices) / columns)
    fig = Figure(figsize=(3.2 * columns, 3.0 * rows))
    colours = {}
    for i, device in enumerate(devices):
        ax = fig.add_subplot(rows, columns, i + 1)
        name = device["name"]
        groups = {}
        for m in models:
            groups.setdefault(f"{m['run']}: {m['model']}", []).append(m)
        for key, group in groups.items():
            colour = colours.setdefault(key, f"C{len(colours) % 10}")
            if group[0]["kind"] == "ann":
                ann = group[0]
                ax.axvline(ann["energy_J"][name], color=colour, ls="--", lw=1)
                ax.plot([ann["energy_J"][name]], [100 * ann["accuracy"]], "s", color=colour, ms=5,
                        label=plain(f"{key} ({100 * ann['accuracy']:.1f} %)"))
                continue
            group = sorted(group, key=lambda r: r["timesteps"] or 0)
            ax.plot([g["energy_J"][name] for g in group], [100 * g["accuracy"] for g in group], "o-", color=colour,
                    ms=3, label=plain(key))
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a narrow decade overlap
        ax.set_title(plain(name) + (" (spiking)" if device["spiking"] else ""), fontsize=9)
        ax.set_xlabel("J per inference", fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.02 + 0.12 * math.ceil(len(names) / 2) / (3.0 * rows), 1, 1))
    return fig


def _firing_rates(models: list) -> Figure:
    spiking = [m for m in models if m.get("layer_rates")]
    fig = Figure(figsize=(8, 1.9 * max(len(spiking), 1) + 0.6))
    for i, m in enumerate(spiking):
        ax = fig.add_subplot(len(spiking), 1, i + 1)
        rates = list(m["layer_rates"].values())
        ax.bar(range(len(rates)), rates, color=f"C{i % 10}")
        ax.set_title(plain(label(m)), fontsize=8)
        ax.set_ylabel("spikes/neuron/step", fontsize=7)
        ax.tick_params(labelsize=7)
    if spiking:
        fig.axes[-1].set_xlabel("neuron layer (input to output)", fontsize=8)
    fig.tight_layout()
    return fig


def _per_class(models: list) -> Figure:
    """Every run's classes along one axis (runs may have different ones); each model has bars for its own."""
    classes = list(dict.fromkeys(c for m in models for c in m["per_class_accuracy"]))
    fig = Figure(figsize=(max(8, 0.45 * len(classes) * max(1, len(models) / 3)), 4.6))
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    x = np.arange(len(classes))
    for i, m in enumerate(models):
        own = [j for j, c in enumerate(classes) if c in m["per_class_accuracy"]]
        ax.bar(x[own] + i * width - 0.4 + width / 2, [100 * m["per_class_accuracy"][classes[j]] for j in own], width,
               label=plain(label(m)))
    ax.set_xticks(x, [plain(c) for c in classes], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    fig.tight_layout()
    return fig


def _confusion(models: list) -> Figure:
    columns = min(3, len(models))
    rows = math.ceil(len(models) / columns)
    fig = Figure(figsize=(4 * columns, 4 * rows))
    for i, m in enumerate(models):
        ax = fig.add_subplot(rows, columns, i + 1)
        matrix = np.asarray(m["confusion_matrix"], float)
        ax.imshow(matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(plain(label(m)), fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def figures(report: dict) -> dict:
    """``{file name: Figure}`` of :data:`FIGURES`."""
    models, picked = report["models"], chosen(report["models"])
    return {"accuracy_vs_timesteps.png": _accuracy_vs_timesteps(models),
            "accuracy_vs_energy.png": _accuracy_vs_energy(models, report["devices"]),
            "firing_rates.png": _firing_rates(picked),
            "per_class_accuracy.png": _per_class(picked),
            "confusion_matrices.png": _confusion(picked)}


# --------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------
def table_rows(report: dict) -> list:
    """The table: per model, ``[(key, value, text)]`` over :data:`COLUMNS` and one energy column per device (value
    in joules, shown in millijoules)."""
    picked = {id(m) for m in chosen(report["models"])}
    rows = []
    for m in report["models"]:
        cells = [(key, m.get(key), format_value(m.get(key), spec)) for key, _, spec in COLUMNS]
        cells += [(f"energy_J.{d['name']}", m["energy_J"][d["name"]], millijoules(m["energy_J"][d["name"]]))
                  for d in report["devices"]]
        if "energy_J_memory" in m:  # absent from report.json written before issue 29
            cells += [(f"energy_J_memory.{d['name']}", m["energy_J_memory"][d["name"]],
                       millijoules(m["energy_J_memory"][d["name"]])) for d in report["devices"]]
        rows.append({"kind": m["kind"], "chosen": id(m) in picked, "cells": cells})
    return rows


def headings(report: dict) -> list:
    memory = [f"mJ / inference, {d['name']} (memory-aware)" for d in report["devices"]] \
        if energy_model(report) == "memory-aware" else []
    return [h for _, h, _ in COLUMNS] + [f"mJ / inference, {d['name']}" + (" (compute-only)" if memory else "")
                                         for d in report["devices"]] + memory


def markdown(report: dict) -> str:
    """``report.md``: every name and text from the runs or profiles escaped (:func:`markdown_text`)."""
    e = markdown_text
    lines = ["# Run comparison", "", "| " + " | ".join(e(h) for h in headings(report)) + " |",
             "|" + "---|" * len(headings(report))]
    for row in table_rows(report):
        lines.append("| " + " | ".join(e(text) for _, _, text in row["cells"]) + " |")
    if notes(report):
        lines += ["", "Missing models:", ""] + [f"- {e(note)}" for note in notes(report)]
    lines += ["", f"Least energy within 1 point of the best accuracy ({energy_model(report)} energy model):", ""]
    lines += [f"- {e(r['device'])}: {e(r['model'])} ({r['accuracy']:.1%}, {millijoules(r['energy_J'])} mJ, "
              f"{r['energy_model']})" for r in recommendations(report)]
    lines += ["", f"Latency: {e(report['timing'])} on {e(report['machine']['processor'])}."]
    return "\n".join(lines) + "\n"


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def page(report: dict, pngs: dict) -> str:
    """``report.html``: the table (each cell's raw value in ``data-value``), the recommendations and the figures."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headings(report))
    body = []
    for i, row in enumerate(table_rows(report)):
        classes = " ".join([row["kind"]] + (["chosen"] if row["chosen"] else []))
        cells = "".join(f'<td data-key="{e(key)}" data-value="{e(json.dumps(value))}">{e(text)}</td>'
                        for key, value, text in row["cells"])
        body.append(f'<tr class="{classes}" data-row="{i}">{cells}</tr>')
    advice = "".join(f"<li><b>{e(r['device'])}</b>: {e(r['model'])} ({r['accuracy']:.1%}, "
                     f"{millijoules(r['energy_J'])} mJ, {r['energy_model']})</li>" for r in recommendations(report))
    runs = ", ".join(f"<code>{e(r['path'])}</code>" for r in report["runs"])
    missing = "".join(f"<li>{e(note)}</li>" for note in notes(report))
    missing = f"<p>Missing models:</p><ul>{missing}</ul>" if missing else ""
    shown = "".join(f'<figure><img src="data:image/png;base64,{pngs[name]}" alt="{e(caption)}">'
                    f"<figcaption>{e(caption)}</figcaption></figure>" for name, caption in FIGURES.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>snn4vision: run comparison</title>
<style>{STYLE}</style></head>
<body>
<h1>Run comparison</h1>
<p>Runs: {runs}. Every figure below is measured on each run's own test images. Bold rows: each SNN at its chosen T
(the least T within {WITHIN:.0%} of its best accuracy).</p>
{missing}
<h2>Which model, at what T, on which chip</h2>
<p>Least energy per inference within 1 point of the best accuracy, by the {energy_model(report)} energy model
(memory traffic and events included; see docs/energy_models.md):</p>
<ul>{advice}</ul>
<h2>Models</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<p>Latency: {e(report['timing'])} on {e(report['machine']['processor'])}
(TensorFlow {e(report['machine']['tensorflow'])}).
Energy: the device profiles' costs applied to the operations and spikes measured on the test images.</p>
<h2>Figures</h2>
{shown}
</body></html>
"""


def pages(report: dict) -> dict:
    """``{file name: bytes}``: the figures, ``report.json``, ``report.md`` and ``report.html``."""
    pngs = {name: _png(fig) for name, fig in figures(report).items()}
    obj, replaced = strict_json(report)
    if replaced:  # JSON has no NaN: say where one was written as null
        obj["non_finite"] = replaced
    files = {name: base64.b64decode(png) for name, png in pngs.items()}
    files["report.json"] = (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()
    files["report.md"] = markdown(report).encode()
    files["report.html"] = page(report, pngs).encode()
    return files


def write_pages(report: dict, out: Path) -> None:
    """Write :func:`pages` into ``out``: all of them or none. A refused write (read-only place, full disk) is one
    UserError, and leaves ``out`` as it was (no temporary files, no half report)."""
    out = Path(out)
    files = pages(report)  # drawn before anything is written: a drawing error leaves nothing behind
    made = next((p for p in [*reversed(out.parents), out] if not p.exists()), None)  # the first folder we create
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_all(files, out)
    except OSError as exc:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise write_failure(exc, out, "choose a writable --out with free space") from None


def _write_all(files: dict, out: Path) -> None:
    """Write every file into a temporary folder in ``out``, then move each into place (renames need no space)."""
    staging = Path(tempfile.mkdtemp(prefix=".tmp-report-", dir=out))
    try:
        for name, content in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        for name in files:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""The whole pipeline in one call (``pipelines/run_all.py``): train, convert, fine-tune if needed, energy, summary and
the run's report (``RUN/report/report.html``).

Three paths:

- ``qcfs`` (default): a QCFS ANN converted to signed integrate-and-fire
  neurons, which reproduce it at T = L without fine-tuning;
- ``relu``: a ReLU ANN converted to keras-spiking neurons without a synapse
  and with 4 spikes per step at the 99.9th percentile, then fine-tuned over
  doubling T (the best measured keras-spiking path);
- ``snn4space``: the design card's own path, SNN4Space's: a ReLU ANN
  converted with 0.1 s low-pass filters at dt = 1 s, then fine-tuned with
  the ``snn4space`` recipe (dt trained down to 1 ms while T doubles).

Each stage is the library function of its own pipeline script, writing the
same files into one run directory, so every stage stays runnable on its own.
With ``resume`` a stage whose outputs exist is skipped and an interrupted
one continues from its last checkpoint; the seconds each stage took are kept
in ``checkpoints/pipeline.json`` so that the summary reports them after a
resume too.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import distributed, rundir
from .rundir import ENERGY_JSON, SUMMARY_JSON, SUMMARY_MD, TrainConfig, load_snn
from .checkpoints import atomic_write_json, atomic_write_text, read_json
from .stages.convert import ConvertConfig, convert_snn
from .stages.energy import check_request as check_energy_request, estimate_energy
from .errors import UserError
from .stages.fine_tuning import RECIPES, FineTuneConfig, fine_tune
from .stages.report import OUTPUTS as REPORT_PAGES, ReportConfig, write_report
from .stages.training import train_ann

PATHS = ("qcfs", "relu", "snn4space")
#: the paths that fine-tune their SNN (a ReLU ANN's conversion) and estimate its energy at --timesteps
FINE_TUNED_PATHS = ("relu", "snn4space")
#: the snn4space path's conversion rate at the 99.9th percentile, in Hz: 2 spikes per step once dt reaches 1 ms.
#: SNN4Space's 4000 cost 19.5x the ANN on loihi at T = 32 for 95.2 %; 2000 cost 10.1x for 94.3 % (seed 0,
#: docs/snn4space_recipe.md#fewer-spikes); 1000 lost 7 points
SNN4SPACE_MAX_RATE = 2000.0
PIPELINE_STATE = "pipeline.json"  # under checkpoints/: seconds per finished stage
SUMMARY_DEVICES = ("gpu", "loihi", "loihi2", "45nm", "45nm_int8")
MEMORY_KEYS = ("ann_J", "snn_J", "snn_over_ann", "snn_over_fair_ann", "break_even_sops_per_synapse")


@dataclass
class PipelineConfig:
    """What ``run_all`` runs: the ANN's training config, the SNN path and what it reports."""

    train: TrainConfig
    path: str = "qcfs"
    max_timesteps: int = 8  # the SNN's accuracy is reported at T = 1, 2, 4, ..., max_timesteps
    # T of the energy estimate; None: 1 (qcfs: each QCFS level in one burst, the ANN exactly and the fewest
    # spikes) or the fine-tuned T (relu)
    timesteps: int | None = None
    devices: tuple = field(default_factory=lambda: SUMMARY_DEVICES)
    fine_tune_epochs: int = 2  # relu path: epochs of the last fine-tuning stage
    # relu and snn4space paths: the conversion's rate (Hz) at the 99.9th percentile of each layer's activations;
    # None: the path's own (relu: 4 spikes per step; snn4space: SNN4SPACE_MAX_RATE)
    max_rate: float | None = None
    sweep: bool = True
    # the settings given explicitly (a flag on the command line), as {"path" or "train.<field>": "--flag"}: a
    # --resume takes the rest from the run's record, and refuses these where they differ from it
    given: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Check every stage's settings, so that a flag only a later stage reads is refused before training."""
        if self.path not in PATHS:
            raise UserError(f"--path must be one of {', '.join(PATHS)}, got {self.path!r}")
        if self.path == "qcfs" and self.train.activation != "qcfs":
            raise UserError("the qcfs path trains a QCFS ANN: drop --activation relu, or pass --path relu")
        if self.path in FINE_TUNED_PATHS and self.train.activation != "relu":
            raise UserError(f"the {self.path} path trains a ReLU ANN: pass --activation relu (or --path qcfs)")
        if self.max_rate is not None and self.path == "qcfs":
            raise UserError("--max-rate sets the rate of the relu and snn4space paths' conversion; the qcfs path's "
                            "neurons fire their QCFS levels in bursts: drop --max-rate, or pass --path snn4space")
        if self.max_timesteps < 1:
            raise UserError(f"--timesteps must be at least 1, got {self.max_timesteps}")
        self.train.validate()
        self.convert_config().validate()
        if self.path in FINE_TUNED_PATHS:
            self.fine_tune_config().validate()
        check_energy_request(list(self.devices), self.energy_timesteps)
        self.report_config().validate()

    @property
    def energy_timesteps(self) -> int:
        if self.timesteps is not None:
            return self.timesteps
        if self.path == "qcfs":
            return 1
        return self.max_timesteps

    def convert_config(self) -> ConvertConfig:
        convert = ConvertConfig(str(self.train.run_dir), max_timesteps=self.max_timesteps, sweep=self.sweep,
                                data_dir=self.train.data_dir, readout_fraction=1.0, seed=self.train.seed)
        if self.path == "relu":
            convert.tau, convert.max_rate = None, 4 / convert.dt
        if self.path == "snn4space":  # SNN4Space's conversion: dt 1 s (0.1 s filters transparent)
            convert.dt, convert.tau, convert.max_rate = 1.0, 0.1, SNN4SPACE_MAX_RATE
        if self.max_rate is not None and self.path in FINE_TUNED_PATHS:  # 0 too: refused by convert's validate
            convert.max_rate = self.max_rate
        return convert

    def fine_tune_config(self) -> FineTuneConfig:
        if self.path == "snn4space":  # the recipe (fine_tuning.RECIPES), at this run's T and epochs
            recipe = RECIPES["snn4space"] | dict(timesteps=self.max_timesteps, epochs=self.fine_tune_epochs)
            return FineTuneConfig(str(self.train.run_dir), **recipe, recipe="snn4space", seed=self.train.seed,
                                  data_dir=self.train.data_dir)
        return FineTuneConfig(str(self.train.run_dir), timesteps=self.max_timesteps, epochs=self.fine_tune_epochs,
                              readout_fraction=1.0, seed=self.train.seed, data_dir=self.train.data_dir)

    def report_config(self) -> ReportConfig:
        run_dir = Path(self.train.run_dir)
        return ReportConfig([str(run_dir)], str(run_dir / rundir.REPORT), data_dir=self.train.data_dir)

    def settings(self) -> dict:
        """What run_all records of itself in ``config.json`` (beside the training config) for --resume."""
        return {"path": self.path, "max_timesteps": self.max_timesteps, "timesteps": self.timesteps,
                "devices": list(self.devices), "fine_tune_epochs": self.fine_tune_epochs, "sweep": self.sweep,
                # the rate converted at, not None for "the path's": a resume converts at it, whatever the default
                # has become since, and accepts --max-rate repeating it
                "max_rate": self.convert_config().max_rate if self.path in FINE_TUNED_PATHS else None}


RECORD = "run_all"  # the key of run_all's settings in config.json's "extra"
#: run_all's own outputs, beside the stages': refused when something else wrote them
RESULTS = [SUMMARY_JSON, SUMMARY_MD, f"{rundir.REPORT}/report.html"]


def _stage_done(run_dir: Path, stage: str) -> bool:
    """True when ``stage`` has written its final output."""
    final = {"train": rundir.METRICS, "convert": rundir.CONVERSION, "fine_tune": rundir.FINE_TUNE,
             "energy": ENERGY_JSON, "report": f"{rundir.REPORT}/report.html"}[stage]
    return (run_dir / final).exists()


def run_all(config: PipelineConfig, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """Run every stage of ``config`` into ``config.train.run_dir``; returns the summary (also written to disk).

    With ``resume`` the settings are those the interrupted run recorded; ``config.given`` may only repeat them."""
    if not resume:
        config.validate()
    cluster = distributed.cluster_from_env()
    if cluster.multi_worker:
        raise UserError(f"run_all.py runs on one machine, but TF_CONFIG names {cluster.workers} workers: train with "
                        "pipelines/train_ann.py on every worker, then run run_all.py --resume on one machine "
                        "without TF_CONFIG for the other stages")
    with rundir.locked(Path(config.train.run_dir), create=not resume):
        if resume:
            config = recorded(config)
            config.validate()
        return _run_all(config, resume, overwrite, verbose)


def recorded(config: PipelineConfig) -> PipelineConfig:
    """The settings of the run in ``config.train.run_dir`` (its ``config.json``), refusing in one line an
    explicitly given setting (``config.given``) that differs from them."""
    run_dir = Path(config.train.run_dir)
    if not (run_dir / rundir.CONFIG).is_file():
        raise UserError(f"nothing to resume in {run_dir} (no {rundir.CONFIG}): run without --resume")
    train = TrainConfig.from_json(read_json(run_dir / rundir.CONFIG))
    train.run_dir = config.train.run_dir
    if "train.data_dir" in config.given:  # where the images are now (moved), not a setting of the run
        train.data_dir = config.train.data_dir
    settings = train.extra.get(RECORD, {"path": train.activation})  # a run trained by train_ann.py: its ANN's path
    if "max_rate" not in settings and settings["path"] == "snn4space":
        settings = settings | {"max_rate": 4000.0}  # recorded before --max-rate, when this path converted at 4000 Hz
    resumed = dataclasses.replace(config, train=train, **{k: tuple(v) if k == "devices" else v
                                                          for k, v in settings.items()})
    for name, flag in config.given.items():
        given, saved = _setting(config, name), _setting(resumed, name)
        if given != saved:
            raise UserError(f"{flag} {_shown(given)} differs from the setting of the run being resumed, "
                            f"{_shown(saved)} ({run_dir / rundir.CONFIG}): drop {flag} to resume with the recorded "
                            "settings, or start again with --overwrite")
    return resumed


def _setting(config: PipelineConfig, name: str):
    value = getattr(config.train, name[len("train."):]) if name.startswith("train.") else getattr(config, name)
    return list(value) if isinstance(value, (tuple, list)) else value


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def check_ownership(run_dir: Path) -> None:
    """Refuse, before any stage runs, files in the run's output folders that the project did not write: no stage
    would move them, and an --overwrite suggested here would be refused too."""
    rundir.refuse_foreign(run_dir, list(rundir.OWN_CONTENTS))


def check_results(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Never replace a summary or report that run_all did not write (provenance.json names what it wrote):
    refuse, or with ``overwrite`` move them to ``stale/<time>/`` and say so."""
    unowned = [name for name in RESULTS if (run_dir / name).exists() and rundir.written_by(run_dir, name) is None]
    if unowned and _written_before_records(run_dir):  # read config.json once, only where it can matter
        unowned = [name for name in unowned if not _looks_like_ours(run_dir, name)]
    if not unowned:
        return
    if not overwrite or resume:
        what = "it" if len(unowned) == 1 else "them"
        hint = "" if resume else f", or pass --overwrite to move {what} to stale/"
        raise UserError(f"{run_dir} already holds {', '.join(unowned)}, which run_all.py did not write: move {what} "
                        f"out of {run_dir}{hint}, or choose another --run directory")
    rundir.set_aside_stale(run_dir, sorted({name.split("/")[0] for name in unowned}),
                           "the earlier results that run_all.py did not write")


def _written_before_records(run_dir: Path) -> bool:
    """A run that train_ann.py wrote (provenance.json says so) and no run_all.py recorded its settings in: made
    before run_all recorded its summary and report, which are then its own (they are replaced as before)."""
    if rundir.written_by(run_dir, rundir.CONFIG) is None:
        return False
    return RECORD not in read_json(run_dir / rundir.CONFIG).get("extra", {})


#: How each of run_all's results begins, as earlier versions wrote them too
_SIGNATURES = {SUMMARY_JSON: b"{", SUMMARY_MD: b"# Summary of ",
               f"{rundir.REPORT}/report.html": b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                                               b'<title>snn4vision: '}


def _looks_like_ours(run_dir: Path, name: str) -> bool:
    with open(run_dir / name, "rb") as handle:
        return handle.read(len(_SIGNATURES[name])) == _SIGNATURES[name]


def _run_all(config: PipelineConfig, resume: bool, overwrite: bool, verbose: bool) -> dict:
    run_dir = Path(config.train.run_dir)
    check_ownership(run_dir)
    if not resume and not overwrite and (run_dir / rundir.CONFIG).exists():
        raise UserError(f"{run_dir} already holds a run: pass --resume to continue it, --overwrite to replace it, "
                        "or choose another --run directory")
    check_results(run_dir, resume, overwrite)
    if not resume:
        config.train.extra = config.train.extra | {RECORD: config.settings()}
    state_path = run_dir / rundir.CHECKPOINTS / PIPELINE_STATE
    seconds = read_json(state_path) if resume and state_path.exists() else {}
    fine_tuned = config.path in FINE_TUNED_PATHS
    stages = ["train", "convert"] + (["fine_tune"] if fine_tuned else []) + ["energy", "report"]

    def stage(name: str, work) -> None:
        if resume and _stage_done(run_dir, name):
            if verbose:
                print(f"== {name}: done earlier, skipped", flush=True)
            return
        if verbose:
            print(f"== {name} ({stages.index(name) + 1}/{len(stages)})", flush=True)
        began = time.perf_counter()
        work()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - began
        atomic_write_json(state_path, seconds)

    def train() -> None:
        partial = resume and (run_dir / rundir.CHECKPOINTS / "ann" / "state.json").exists()
        # resumed before the first epoch was committed: nothing to keep, start the training again
        train_ann(config.train, resume=partial, overwrite=overwrite or (resume and not partial), verbose=verbose)

    def report() -> None:
        write_report(config.report_config(), overwrite=True, verbose=verbose)
        rundir.record_outputs(run_dir, "run_all", [f"{rundir.REPORT}/{name}" for name in REPORT_PAGES], [])

    stage("train", train)
    stage("convert", lambda: convert_snn(config.convert_config(), overwrite=overwrite or resume, verbose=verbose))
    if fine_tuned:
        partial = resume and (run_dir / rundir.CHECKPOINTS / "fine_tune" / "state.json").exists()
        stage("fine_tune", lambda: fine_tune(config.fine_tune_config(), resume=partial,
                                             overwrite=overwrite and not partial, verbose=verbose))
    stage("energy", lambda: estimate_energy(run_dir, list(config.devices), config.energy_timesteps,
                                            data_dir=config.train.data_dir, overwrite=overwrite or resume,
                                            verbose=verbose))
    stage("report", report)
    summary = summarise(run_dir, seconds, fine_tuned=fine_tuned)
    atomic_write_json(run_dir / SUMMARY_JSON, summary)
    atomic_write_text(run_dir / SUMMARY_MD, format_summary(summary))
    rundir.record_outputs(run_dir, "run_all", [SUMMARY_JSON, SUMMARY_MD], [])
    if verbose:
        print(format_summary(summary))
    return summary


def summarise(run_dir: str | Path, seconds: dict | None = None, fine_tuned: bool = False) -> dict:
    """The summary of a run directory that went through the pipeline: accuracy, spikes, energy, wall time.

    ``fine_tuned``: include the fine-tuned SNN's accuracy per stage (``fine_tune.json``).
    """
    run_dir = Path(run_dir)
    rundir.require(run_dir, rundir.METRICS, rundir.CONVERSION, ENERGY_JSON)
    metrics = read_json(run_dir / rundir.METRICS)
    conversion = read_json(run_dir / rundir.CONVERSION)
    energy = read_json(run_dir / ENERGY_JSON)
    neurons = float(sum(load_snn(run_dir).neurons_per_layer()))
    chosen = conversion["variants"][0]

    def rows(results: list) -> list:
        return [{"timesteps": r["timesteps"], "accuracy": r["accuracy"],
                 "spikes_per_neuron": r["spikes_per_image"] / neurons} for r in results]

    if fine_tuned:
        rundir.require(run_dir, rundir.FINE_TUNE)
    return {
        "run": str(run_dir),
        "ann_test_accuracy": metrics["test"]["accuracy"],
        "snn": chosen["name"],
        "converted": rows(chosen["by_timesteps"]),
        "fine_tuned": rows(read_json(run_dir / rundir.FINE_TUNE)["results"]) if fine_tuned else None,
        "energy": {"model": energy["model"], "timesteps": energy["timesteps"],
                   "snn_test_accuracy": energy["snn_test_accuracy"],
                   "spikes_per_neuron": energy["spikes_per_image"] / neurons,
                   "sop_per_mac": energy.get("sop_per_mac"),  # None for energy.json from before it was recorded
                   # compute-only (the key every reader, crossval included, has always read)
                   "devices": {name: {k: s[k] for k in ("ann_J", "snn_J", "snn_over_ann")}
                               for name, s in energy["summary"].items()},
                   # memory-aware and the fair baseline: None for energy.json from before issue 29
                   "memory_aware": None if "memory_aware" not in energy else
                   {name: {k: m.get(k) for k in MEMORY_KEYS} for name, m in energy["memory_aware"].items()},
                   "fair_baseline": energy.get("fair_baseline") and
                   {k: energy["fair_baseline"][k] for k in ("device", "compute_only_J", "memory_aware_J")}},
        "neurons": int(neurons),
        "wall_time_s": dict(seconds or {}),
        "training_time_s": metrics["wall_time_s"],
        # why the ANN is far below what its warm-up reached (evaluation.quantisation_record); None when it is not
        "training_warning": (metrics.get("quantisation") or {}).get("warning"),
    }


def format_summary(summary: dict) -> str:
    """The summary as Markdown tables (printed by run_all.py and written to ``summary.md``)."""
    lines = [f"# Summary of {summary['run']}", "",
             f"ANN test accuracy: **{100 * summary['ann_test_accuracy']:.1f} %**; SNN: {summary['snn']}", "",
             *([f"**Warning:** {summary['training_warning']}", ""] if summary.get("training_warning") else []),
             "| model | T | test accuracy | gap to ANN (points) | spikes per neuron per image |",
             "|---|---|---|---|---|"]
    for kind in ("converted", "fine_tuned"):
        for r in summary[kind] or []:
            gap = 100 * (r["accuracy"] - summary["ann_test_accuracy"])
            lines.append(f"| {kind.replace('_', '-')} SNN | {r['timesteps']} | {100 * r['accuracy']:.1f} % | "
                         f"{gap:+.1f} | {r['spikes_per_neuron']:.3f} |")
    e = summary["energy"]
    lines += ["", f"Energy per inference ({e['model']} SNN at T = {e['timesteps']}, test accuracy "
                  f"{100 * e['snn_test_accuracy']:.1f} %, {e['spikes_per_neuron']:.3f} spikes per neuron"
                  + (f", {e['sop_per_mac']:.3f} synaptic operations per ANN MAC" if e.get("sop_per_mac") else "")
                  + "):", "",
              "| device | model | ANN (mJ) | SNN (mJ) | SNN / ANN |", "|---|---|---|---|---|"]
    memory = e.get("memory_aware") or {}
    for name, d in e["devices"].items():
        lines.append(f"| {name} | compute-only | {1e3 * d['ann_J']:.4g} | {1e3 * d['snn_J']:.4g} | "
                     f"{d['snn_over_ann']:.2f} |")
        if name in memory:
            m = memory[name]
            lines.append(f"| {name} | memory-aware | {1e3 * m['ann_J']:.4g} | {1e3 * m['snn_J']:.4g} | "
                         f"{m['snn_over_ann']:.2f} |")
    fair = e.get("fair_baseline")
    if fair:
        lines += ["", f"Fair baseline: the ANN at its own precision on {fair['device']} (int8 weights, "
                      f"ceil(log2(L+1))-bit activations): {1e3 * fair['compute_only_J']:.4g} mJ compute-only, "
                      f"{1e3 * fair['memory_aware_J']:.4g} mJ memory-aware. SNN / fair ANN, memory-aware: "
                      + ", ".join(f"{n} {m['snn_over_fair_ann']:.2f}" for n, m in memory.items()
                                  if m.get("snn_over_fair_ann") is not None)]
    lines += ["", "| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {s:.0f} |" for name, s in summary["wall_time_s"].items()]
    lines += ["", f"Every model of the run side by side, with figures: {summary['run']}/{rundir.REPORT}/report.html"]
    return "\n".join(lines) + "\n"

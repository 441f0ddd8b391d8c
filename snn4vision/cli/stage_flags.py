"""The flags of the stage commands after training: conversion, fine-tuning, energy, prediction, NIR export and
the report."""
from __future__ import annotations

import argparse

from ..stages.convert import ConvertConfig
from ..stages.export import CHECKS, MODELS
from ..stages.fine_tuning import RECIPES, FineTuneConfig
from .training_flags import add_run_flags, positive_float, positive_int


def convert_snn_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convert_snn.py",
                                description="Convert the run's trained ANN into a spiking network (stage 2) and "
                                            "report its accuracy at T = 1, 2, 4, ... timesteps.")
    p.add_argument("--run", dest="run_dir", required=True, metavar="RUN_DIR", help="run directory of train_ann.py")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in RUN_DIR")
    p.add_argument("--timesteps", type=positive_int, default=32, help="largest T evaluated (default 32)")
    p.add_argument("--dt", type=positive_float, default=0.001, help="simulation step in seconds (default 0.001)")
    p.add_argument("--tau", type=positive_float, default=0.1, help="synaptic low-pass time constant in seconds")
    p.add_argument("--synapse", choices=("lowpass", "none"), default="lowpass",
                   help="none: spikes go straight to the next layer")
    p.add_argument("--normalise", action=argparse.BooleanOptionalAction, default=True,
                   help="data-based rate normalisation (a percentile of each layer's activations on training images)")
    p.add_argument("--percentile", type=positive_float, default=99.9)
    p.add_argument("--max-rate", type=positive_float, help="rate in Hz at the percentile (default 1/dt)")
    p.add_argument("--readout-fraction", type=positive_float,
                   help="prediction = mean logit over the last ceil(fraction*T) steps (1.0: all steps); "
                        "default 0.5, or 1.0 for a QCFS network")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seed", type=int, default=0, help="initial membrane voltages")
    p.add_argument("--no-sweep", dest="sweep", action="store_false",
                   help="skip the variants (ReLU: no normalisation, tau 5 ms, no synapse, dt 10 ms; QCFS: the other "
                        "IF neurons)")
    p.add_argument("--signed", action=argparse.BooleanOptionalAction, default=True,
                   help="QCFS networks: integrate-and-fire neurons with negative spikes, which undo early "
                        "overshoot (default); --no-signed: plain IF neurons")
    p.add_argument("--max-spikes-per-step", dest="max_spikes", type=positive_int,
                   help="QCFS networks, signed neurons: bursts of up to N spikes per neuron and step (default: the "
                        "network's largest levels L, at least 2; 1 with --no-signed). With N >= L / T, T < L steps "
                        "fire the L levels in bursts: at T = 1 the SNN is the QCFS ANN (up to float rounding); "
                        "N >= T makes T = L exact too")
    p.add_argument("--data-dir", help="where the run's images are now, if they moved")
    return p


def convert_config(args: argparse.Namespace):

    return ConvertConfig(run_dir=args.run_dir, max_timesteps=args.timesteps, dt=args.dt,
                         tau=None if args.synapse == "none" else args.tau, normalise=args.normalise,
                         percentile=args.percentile, max_rate=args.max_rate, readout_fraction=args.readout_fraction,
                         batch_size=args.batch_size, seed=args.seed, sweep=args.sweep, data_dir=args.data_dir,
                         signed=args.signed, max_spikes=args.max_spikes)


def fine_tune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fine_tune.py",
                                description="Fine-tune the converted SNN with spiking-aware training over doubling "
                                            "timesteps T = 1, 2, 4, ... (stage 3). Flags left out take the "
                                            "recipe's value, or the default shown.")
    add_run_flags(p)
    p.add_argument("--recipe", choices=("snn4space",),
                   help="snn4space: SNN4Space's schedule (T 32, batch 16, 16 epochs, RMSprop 3e-6, dt trained from "
                        "the conversion's down to 1 ms under a geometric ceiling, trainable tau capped on a path to "
                        "1 ms); convert with --dt 1 --tau 0.1 --max-rate 4000 first")
    p.add_argument("--timesteps", type=positive_int, help="target T (rounded down to a power of 2; default 8)")
    p.add_argument("--epochs", type=positive_int, help="epochs of the last stage; stage n gets 2^(E-n) x (default 1)")
    p.add_argument("--batch-size", type=positive_int,
                   help="batch of the last stage; stage n gets 2^(E-n) x (default 32)")
    p.add_argument("--learning-rate", type=positive_float,
                   help="learning rate of the last stage; stage n gets 2^(E-n) x (default 1e-5)")
    p.add_argument("--optimizer", choices=("adam", "rmsprop"), help="default adam")
    p.add_argument("--train-tau", action=argparse.BooleanOptionalAction, help="also train the synaptic time constants")
    p.add_argument("--train-dt", action=argparse.BooleanOptionalAction, help="also train the step length dt")
    p.add_argument("--dt-min", type=positive_float,
                   help="with --train-dt: the floor of dt in seconds, enforced after every optimizer step")
    p.add_argument("--dt-decay", choices=("none", "geometric"),
                   help="with --train-dt and --dt-min: geometric caps dt on a geometric path from its start to "
                        "--dt-min, reached when the last stage starts; none leaves it to the gradient (dt never rises "
                        "above its start)")
    p.add_argument("--tau-min", type=positive_float,
                   help="with --dt-min: the synaptic time constant when dt reaches --dt-min; the taus are capped on "
                        "the log-log line from the conversion's (dt, tau) to (--dt-min, --tau-min)")
    p.add_argument("--rate-band", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="firing-rate band in Hz of the rate regularisers (default 10 20)")
    p.add_argument("--rate-weight", type=float, help="weight of the regulariser of the layers' mean filtered rates "
                                                     "outside the band (default 0: off)")
    p.add_argument("--rate-l2", type=float, help="weight of keras-spiking's L2 regulariser of each neuron's spike "
                                                 "rate outside the band (SNN4Space: 1e-9; default 0: off)")
    p.add_argument("--sparsity", type=float,
                   help="weight of the measured synaptic operations per ANN MAC in the loss (default 0: off)")
    p.add_argument("--readout-fraction", type=positive_float, help="default 0.5")
    p.add_argument("--max-train-images", type=positive_int, help="fine-tune on N training images drawn at random (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="where the run's images are now, if they moved")
    return p


def fine_tune_config(args: argparse.Namespace):
    """A FineTuneConfig: the recipe's values (or the defaults), overridden by the flags that were given."""

    values = dict(RECIPES[args.recipe]) if args.recipe else {}
    names = ("timesteps", "epochs", "batch_size", "learning_rate", "optimizer", "train_tau", "train_dt", "dt_min",
             "dt_decay", "tau_min", "rate_band", "rate_weight", "rate_l2", "sparsity", "readout_fraction",
             "max_train_images")
    values.update({name: getattr(args, name) for name in names if getattr(args, name) is not None})
    if "rate_band" in values:
        values["rate_band"] = tuple(values["rate_band"])
    return FineTuneConfig(run_dir=args.run_dir, seed=args.seed, data_dir=args.data_dir, recipe=args.recipe,
                          **values)


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.py", description="Classify image files (event files for a run "
                                                               "trained on event recordings) with a run's ANN or SNN.")
    p.add_argument("--run", dest="run_dir", required=True, metavar="RUN_DIR")
    p.add_argument("--model", choices=("ann", "snn", "fine-tuned"), default="ann")
    p.add_argument("--timesteps", type=positive_int, help="SNN timesteps (default: the saved model's)")
    p.add_argument("images", nargs="+", help="image files, or event files (.npz, .npy, .h5, .aedat) for an event run")
    return p


def energy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="energy_estimation.py",
                                description="Estimate energy per inference of the run's ANN and SNN on hardware "
                                            "profiles, from spikes measured on the test split.")
    p.add_argument("--run", dest="run_dir", required=True, metavar="RUN_DIR")
    p.add_argument("--devices", nargs="+", help="profile names (default: every shipped profile)")
    p.add_argument("--timesteps", type=positive_int, help="SNN timesteps (default: the saved SNN's)")
    p.add_argument("--model", choices=("auto", "converted", "fine-tuned"), default="auto",
                   help="which SNN (auto: fine-tuned if present)")
    p.add_argument("--profiles", help="folder of device profiles (*.toml); default: the shipped energy/")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--data-dir", help="where the run's images are now, if they moved")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier estimate")
    return p


def export_nir_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export_nir.py",
                                description="Write the run's SNN as a NIR graph (snn.nir) for neuromorphic hardware "
                                            "toolchains and other simulators, and measure its test accuracy.")
    p.add_argument("--run", dest="run_dir", required=True, metavar="RUN_DIR")
    p.add_argument("--model", choices=MODELS, default="converted", help="which SNN of the run (default: converted)")
    p.add_argument("--timesteps", type=positive_int, help="T the graph is meant to run for (default: the SNN's)")
    p.add_argument("--out", help="the .nir file to write (default: RUN_DIR/snn.nir)")
    p.add_argument("--approximate", action="store_true",
                   help="export plain IF neurons with one spike per step where the SNN fires signed spikes or "
                        "bursts, which NIR cannot express; the accuracy this costs is measured")
    p.add_argument("--check", choices=CHECKS, default="none",
                   help="also run the written file in sinabs and compare predictions and spike counts with ours "
                        "(needs pip install -e \".[nir]\")")
    p.add_argument("--check-images", type=positive_int, help="test images for --check (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--data-dir", help="where the run's images are now, if they moved")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export")
    return p


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="report.py",
                                description="Compare finished runs side by side (accuracy, operations, sparsity, "
                                            "latency, energy on every device) in report.html, report.md and "
                                            "report.json, measured on each run's test images.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (converted or spiking-transformer runs)")
    p.add_argument("--out", required=True, help="folder for the report")
    p.add_argument("--timesteps", type=positive_int, nargs="+", default=[],
                   help="T of the converted SNNs (default: those their conversion measured)")
    p.add_argument("--devices", nargs="+", default=[], help="device profiles (default: all)")
    p.add_argument("--profiles", help="folder of device profiles (*.toml); default: the shipped energy/")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--timing-images", type=positive_int, default=32, help="images timed for the latency column")
    p.add_argument("--data-dir", help="where the runs' images are now, if they moved")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    return p

"""The Python API: a Keras model of your own to a spiking network, its accuracy, energy and NIR file, with no run
directory.

.. code-block:: python

    import snn4vision  # first: it selects Keras 2 (tf-keras) for TensorFlow

    snn = snn4vision.convert(model, train_images, timesteps=32)
    snn.evaluate(test_images, test_labels)                     # {"accuracy": ..., "spikes_per_image": ...}
    snn4vision.estimate_energy(snn, test_images, devices=["loihi", "cpu"])
    snn.export_nir("model.nir", approximate=True)              # NIR's IF neurons (see SpikingNetwork.export_nir)

The pipeline stages share its conversion policy (:func:`qcfs_neurons`, :func:`normalised`). This module is a
library layer: it imports no stage, and stages may import it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from . import layer_graph
from .costs import activity_costs, energy_table, load_devices, summary
from .errors import UserError, check_keras
from .evaluation import array_batches, as_images, check_count, layer_spikes, readout_steps, simulate_split
from .memory_costs import FAIR_BASELINE, energy_models
from .resources import check_timesteps
from .simulation import IF_NEURONS, NEURONS, SpikingNetwork

#: The step lengths (s) the simulator runs: it floors dt at 1e-8 s, and far shorter steps overflow float32 rates.
MIN_DT, MAX_DT = 1e-8, 1e3
AUTO = "auto"


# --------------------------------------------------------------------------
# The conversion policy, shared with the convert stage
# --------------------------------------------------------------------------
def default_bursts(levels: int, signed: bool) -> int:
    """Spikes per step of a QCFS network's neurons by default: its levels L (at least 2) for signed IF neurons,
    so that at T = 1 a neuron fires its QCFS level in one burst (:meth:`SpikingNetwork.compression`); else 1."""
    return max(2, levels) if signed else 1


def qcfs_neurons(graph: layer_graph.LayerGraph, signed: bool = True, max_spikes: int | None = None) -> dict:
    """The neurons of a QCFS ANN's SNN, as :class:`SpikingNetwork` settings: integrate-and-fire at the ANN's
    thresholds, without a synapse, signed unless ``signed`` is False, with bursts of up to ``max_spikes`` spikes
    per step (default :func:`default_bursts` of the most levels of any layer)."""
    levels = max(n.params["levels"] for n in graph.neurons)
    return {"neuron": "signed_if" if signed else "if", "tau": None,
            "max_spikes": default_bursts(levels, signed) if max_spikes is None else max_spikes}


def normalised(graph: layer_graph.LayerGraph, batches, percentile: float, max_rate: float, seed: int = 0) -> tuple:
    """``(graph, percentiles)``: ``graph`` with gains mapping each neuron layer's ``percentile`` ReLU output on
    ``batches`` of images to ``max_rate`` Hz (:func:`layer_graph.normalise`), and those percentiles."""
    percentiles = layer_graph.activation_percentiles(graph, batches, percentile, seed=seed)
    return layer_graph.normalise(graph, percentiles, max_rate), percentiles


def gains_fit_float32(graph: layer_graph.LayerGraph) -> bool:
    """Whether every gain fits in float32 (the SNN holds them so: a larger one would make it NaN)."""
    return all(abs(g) <= np.finfo(np.float32).max for g in graph.gains.values())


# --------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------
@dataclass
class ConversionOptions:
    """The keyword options of :func:`convert`, after nengo-dl's ``Converter`` where they match."""

    #: T that ``snn(images)``, :meth:`~SpikingNetwork.evaluate` and :func:`estimate_energy` run unless given one.
    timesteps: int = 32
    #: ``"auto"``: signed IF neurons for a QCFS ANN, keras-spiking's neurons for a ReLU ANN; or a name of
    #: :data:`snn4vision.simulation.NEURONS` that fits the ANN ("if", "signed_if", "lif": QCFS ANNs).
    neuron: str = AUTO
    #: Seconds per step.
    dt: float = 0.001
    #: The synaptic low-pass time constant in seconds, None for no synapse; ``"auto"``: 0.1 for a ReLU ANN,
    #: None for a QCFS ANN (whose IF neurons take none). nengo-dl's ``synapse``.
    tau: float | None | str = AUTO
    #: ReLU ANNs: scale each layer so that its ``percentile`` activation on the calibration images fires at
    #: ``max_rate``. nengo-dl's ``scale_firing_rates``, measured per layer.
    normalise: bool = True
    percentile: float = 99.9
    #: Hz at the percentile; None: 1 / dt (one spike per step).
    max_rate: float | None = None
    #: QCFS ANNs: spikes one neuron may fire per step; None: the levels L (at least 2) for signed IF, else 1.
    max_spikes: int | None = None
    #: LIF neurons: the membrane's decay per step, in (0, 1].
    leak: float = 0.9
    #: The prediction is the mean logit over the last ceil(fraction * T) steps; None: 0.5 for ReLU ANNs (their
    #: synapses settle first), 1.0 for QCFS ANNs.
    readout_fraction: float | None = None
    #: At most this many calibration images are read (the pipeline's default too).
    calibration_images: int = 256
    batch_size: int = 32
    #: Seeds the keras-spiking neurons' initial voltages and the subsample of activations.
    seed: int = 0

    @classmethod
    def from_options(cls, options: dict) -> "ConversionOptions":
        """The options of ``options``, checked (:meth:`validate`); an unknown name is one :class:`UserError`."""
        names = [f.name for f in dataclasses.fields(cls)]
        for name in options:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise UserError(f"unknown conversion option {name!r}: {hint}the options are {', '.join(names)}")
        values = cls(**options)
        values.validate()
        return values

    def validate(self) -> None:
        """One :class:`UserError` for the first option that is out of range or of the wrong type."""
        for name in ("timesteps", "calibration_images", "batch_size"):
            check_count(getattr(self, name), name)
        check_timesteps(self.timesteps, "timesteps")
        if self.neuron != AUTO and self.neuron not in NEURONS:
            raise UserError(f"neuron must be 'auto' or one of {', '.join(NEURONS)}, got {self.neuron!r}")
        checks = [
            (_number(self.dt) and MIN_DT <= self.dt <= MAX_DT,
             f"dt must be a number of seconds between {MIN_DT:g} and {MAX_DT:g}, got {self.dt!r}"),
            (self.tau in (AUTO, None) or (_number(self.tau) and self.tau > 0),
             f"tau must be a positive number of seconds, None (no synapse) or 'auto', got {self.tau!r}"),
            (isinstance(self.normalise, bool), f"normalise must be True or False, got {self.normalise!r}"),
            (_number(self.percentile) and 0 < self.percentile <= 100,
             f"percentile must be in (0, 100], got {self.percentile!r}"),
            (self.max_rate is None or (_number(self.max_rate) and self.max_rate > 0),
             f"max_rate must be a positive number of Hz or None (1 / dt), got {self.max_rate!r}"),
            (self.max_spikes is None or (_whole(self.max_spikes) and self.max_spikes >= 1),
             f"max_spikes must be a whole number, 1 or more, or None, got {self.max_spikes!r}"),
            (_number(self.leak) and 0 < self.leak <= 1, f"leak must be in (0, 1], got {self.leak!r}"),
            (self.readout_fraction is None or (_number(self.readout_fraction) and 0 < self.readout_fraction <= 1),
             f"readout_fraction must be in (0, 1] or None, got {self.readout_fraction!r}"),
            (_whole(self.seed), f"seed must be a whole number, got {self.seed!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def neurons(self, graph: layer_graph.LayerGraph) -> dict:
        """The :class:`SpikingNetwork` neuron settings for ``graph``: the QCFS policy of the convert stage for a
        QCFS ANN; keras-spiking's neurons, with a synapse unless ``tau`` is None, for a ReLU ANN."""
        if graph.thresholds:
            if self.neuron not in (AUTO, *IF_NEURONS):
                raise UserError(f"a QCFS ANN converts to integrate-and-fire neurons ({', '.join(IF_NEURONS)}), "
                                f"not {self.neuron}")
            if self.tau not in (AUTO, None):
                raise UserError("a QCFS ANN's integrate-and-fire neurons take no synapse: drop tau (or pass None)")
            neuron = "signed_if" if self.neuron == AUTO else self.neuron
            if neuron != "signed_if" and self.max_spikes not in (None, 1):
                raise UserError(f"max_spikes above 1 (bursts) needs signed_if neurons, not {neuron}")
            settings = qcfs_neurons(graph, neuron == "signed_if", self.max_spikes)
            return settings | {"neuron": neuron} | ({"leak": self.leak} if neuron == "lif" else {})
        if self.neuron not in (AUTO, "keras_spiking"):
            raise UserError(f"{self.neuron} neurons need a QCFS ANN (snn4vision.layers.QCFS activations): a ReLU "
                            "ANN converts to keras_spiking neurons")
        if self.max_spikes not in (None, 1):
            raise UserError("max_spikes (bursts) is for a QCFS ANN's signed IF neurons: a ReLU ANN's neurons fire "
                            "at max_rate instead")
        return {"neuron": "keras_spiking", "tau": 0.1 if self.tau == AUTO else self.tau}


def _number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_model(model) -> None:
    """One :class:`UserError` unless ``model`` is a built tf-keras model."""
    check_keras()
    if not isinstance(model, tf.keras.Model):
        hint = (": import snn4vision before keras and tensorflow, so that TensorFlow uses tf-keras (Keras 2)"
                if type(model).__module__.startswith("keras") else "")
        raise UserError(f"model must be a tf.keras Model, got {type(model).__module__}.{type(model).__name__}{hint}")
    if not model.built or not model.inputs:
        raise UserError(f"model {model.name} is not built: give it an Input (or call it on images) first")


def convert(model, calibration=None, **options) -> SpikingNetwork:
    """``model`` (a trained Keras classifier) as a spiking network.

    Wraps :func:`layer_graph.build_graph` (BatchNorm folded; an unconvertible layer is named), the rate
    normalisation of a ReLU ANN on ``calibration`` images (:func:`normalised`) and
    :meth:`SpikingNetwork.from_graph`, with the convert stage's QCFS policy (:func:`qcfs_neurons`).
    ``calibration``: an array ``(N, h, w, c)`` or a tf.data Dataset of images or ``(images, labels)`` batches,
    such as the training set; a QCFS ANN, or ``normalise=False``, needs none. ``options``:
    :class:`ConversionOptions`. Every bad argument is one :class:`UserError`.
    """
    settings = ConversionOptions.from_options(options)
    check_model(model)
    graph = layer_graph.build_graph(model)
    neurons = settings.neurons(graph)
    if not graph.thresholds and settings.normalise:
        if calibration is None:
            raise UserError("a ReLU ANN's rates are normalised on calibration images: pass some training images "
                            "as calibration (or normalise=False)")
        images, _ = as_images(calibration, graph.image_shape, "calibration images", settings.calibration_images)
        max_rate = settings.max_rate or 1.0 / settings.dt
        batches = [x for x, _ in array_batches(images, settings.batch_size)]
        graph, _ = normalised(graph, batches, settings.percentile, max_rate, settings.seed)
        if not gains_fit_float32(graph):
            raise UserError(f"the rates overflow float32 at dt {settings.dt:g} and max_rate {max_rate:g} Hz: choose "
                            "a larger dt or a lower max_rate")
    snn = SpikingNetwork.from_graph(graph, timesteps=settings.timesteps, dt=settings.dt, seed=settings.seed,
                                    **neurons)
    fraction = settings.readout_fraction or (1.0 if graph.thresholds else 0.5)
    snn.readout_steps = readout_steps(settings.timesteps, fraction)
    return snn


def export_nir(snn: SpikingNetwork, path, timesteps: int | None = None, approximate: bool = False):
    """:meth:`SpikingNetwork.export_nir` as a function."""
    return snn.export_nir(path, timesteps, approximate)


# --------------------------------------------------------------------------
# estimate_energy
# --------------------------------------------------------------------------
@dataclass
class EnergyEstimate(Mapping):
    """Energy per inference of an ANN and its SNN on each device: ``estimate[device]`` is
    ``{"ann_J", "snn_J", "snn_over_ann", "snn_over_fair_ann", "spiking"}`` in the compute-only model
    (:func:`costs.summary`), ``memory_aware[device]`` the same in the memory-aware model with
    ``break_even_sops_per_synapse`` (:mod:`snn4vision.memory_costs`), ``fair_baseline`` the ANN at its own
    precision on the 45 nm int8 profile, and ``layers`` the per-layer compute-only table
    (:func:`costs.energy_table`, its last row the totals). ``str(estimate)`` is a table of both models."""

    devices: dict
    timesteps: int
    dt: float
    images: int
    spikes_per_image: float
    sop_per_mac: float | None
    layers: list = field(repr=False)
    memory_aware: dict = field(default_factory=dict)
    fair_baseline: dict | None = None

    def __getitem__(self, device: str) -> dict:
        return self.devices[device]

    def __iter__(self):
        return iter(self.devices)

    def __len__(self) -> int:
        return len(self.devices)

    def __str__(self) -> str:
        lines = [f"SNN at T={self.timesteps}: {self.spikes_per_image:.0f} spikes/image over {self.images} images, "
                 + (f"{self.sop_per_mac:.3f} synaptic operations per ANN MAC" if self.sop_per_mac is not None
                    else "no ANN MACs"),
                 f"{'device':>12} {'spiking':>8} {'model':>13} {'ANN J/inf':>12} {'SNN J/inf':>12} {'SNN/ANN':>9}"]
        for name, d in self.devices.items():
            for model, e in (("compute-only", d), ("memory-aware", self.memory_aware.get(name))):
                if e is not None:
                    lines.append(f"{name:>12} {str(d['spiking']):>8} {model:>13} {e['ann_J']:12.3e} {e['snn_J']:12.3e} "
                                 f"{e['snn_over_ann']:9.3f}")
        if self.fair_baseline:
            lines.append(f"fair baseline (the ANN at its own precision on {self.fair_baseline['device']}): "
                         f"{self.fair_baseline['compute_only_J']:.3e} J compute-only, "
                         f"{self.fair_baseline['memory_aware_J']:.3e} J memory-aware")
        return "\n".join(lines)


def select_devices(devices=None, profiles=None) -> dict:
    """``{name: Device}`` of the profiles named (a name or a list; None: every profile) among the shipped ones, or
    those of the folder ``profiles``; an unknown name is one :class:`UserError`."""
    available = load_devices(profiles)
    names = [devices] if isinstance(devices, str) else list(devices or available)
    unknown = [str(n) for n in names if n not in available]
    if unknown:
        raise UserError(f"unknown device(s) {', '.join(unknown)}: choose from {', '.join(available)}, or pass "
                        "profiles= with a folder that also holds a profile of your own")
    return {n: available[n] for n in names}


def estimate_energy(model_or_snn, images, devices=None, *, timesteps: int | None = None,
                    profiles: str | Path | None = None, batch_size: int = 32, calibration=None,
                    **options) -> EnergyEstimate:
    """Energy per inference of an ANN and its SNN on ``devices`` (names of device profiles; None: all), from the
    spikes the SNN fires on ``images`` at ``timesteps`` (default: the SNN's).

    ``model_or_snn``: a :class:`SpikingNetwork`, or a Keras model, converted first with :func:`convert` and
    ``options`` on ``calibration`` (default: ``images``). Counted as the energy stage counts
    (:func:`costs.activity_costs`, :func:`costs.energy_table`): the ANN per MAC, the SNN per synaptic operation
    on spiking devices. ``profiles``: a folder of ``*.toml`` profiles instead of the shipped ones.
    """
    selected = select_devices(devices, profiles)
    fair = load_devices(profiles).get(FAIR_BASELINE)  # priced whether or not its profile was asked for
    check_count(batch_size, "batch_size")
    if isinstance(model_or_snn, SpikingNetwork):
        if options or calibration is not None:
            raise UserError(f"conversion options ({', '.join(options) or 'calibration'}) apply to a Keras model: "
                            "this is a spiking network already")
        snn = model_or_snn
    else:
        snn = convert(model_or_snn, images if calibration is None else calibration, **options)
    timesteps = snn.timesteps if timesteps is None else timesteps
    check_count(timesteps, "timesteps")
    check_timesteps(timesteps, "timesteps")
    images, _ = as_images(images, snn.nodes[0].shape)
    result = simulate_split(snn, array_batches(images, batch_size), timesteps)
    spikes = layer_spikes(result["spikes"])
    # the messages too: a graded-spike device (loihi2) pays one per burst, as the energy stage prices it
    records = snn.activity(spikes, timesteps, layer_spikes(result["events"]))
    costs, operations, rates = activity_costs(records, timesteps, snn.dt)
    rows = energy_table(costs, operations, rates, selected)
    models = energy_models(records, timesteps, selected, snn.layer_levels(), fair)
    totals = summary(rows[-1], selected)
    memory = {}
    for name, entry in models["devices"].items():
        totals[name]["snn_over_fair_ann"] = entry["compute_only"].get("snn_over_fair_ann")
        memory[name] = {key: entry["memory_aware"].get(key) for key in ("ann_J", "snn_J", "snn_over_ann",
                                                                         "snn_over_fair_ann")}
        memory[name]["break_even_sops_per_synapse"] = entry["break_even_sops_per_synapse"]
    baseline = models["fair_baseline"] and {k: models["fair_baseline"][k] for k in ("device", "compute_only_J",
                                                                                    "memory_aware_J")}
    return EnergyEstimate(devices=totals, timesteps=int(timesteps), dt=snn.dt, images=int(len(images)),
                          spikes_per_image=float(spikes.sum()), sop_per_mac=rows[-1]["sop_per_mac"], layers=rows,
                          memory_aware=memory, fair_baseline=baseline)

"""The memory-aware cost model, next to the compute-only one of :mod:`snn4vision.costs` (issue 29).

Compute-only prices operations (MACs, synaptic operations, neuron updates). Memory-aware adds, per layer and
per inference, what moving the operands costs (after Lemaire et al., ICONIP 2022; our own formulation):

- **ANN** (a digital accelerator with data reuse): a fetched weight serves up to ``ann_output_tile`` output
  positions, a fetched input up to ``ann_channel_tile`` output channels; one bias read and one output write
  per output value; a pooling reads each value it adds.
- **SNN on a spiking device** (event-driven, no reuse): each synaptic operation reads its weight and reads and
  writes its target's membrane potential; each neuron update per step reads and writes the membrane and reads
  the bias; each event is read from the layer's input queue, written to the next one, addressed (2 + kernel
  positions integer ops) and sent (``energy_per_event``). Layers that read the image are dense convs (as the
  ANN). On a ``graded`` device a burst is one event carrying ``payload_bits``.
- One SRAM access of ``w`` bits from a memory of ``M`` bits costs ``(a * M + b) * w / access_bits``: Lemaire
  et al.'s linear law in the capacity (fitted to Horowitz's 8 kB, 32 kB and 1 MB SRAM reads), scaled by the
  word width. Profiles without an SRAM law (measured chips: their per-operation figures already include their
  on-core memory) pay only the events.

The *fair baseline* (Yan et al. 2024) is the ANN on :data:`FAIR_BASELINE`, a 45 nm profile at int8 weights
whose activations take the network's own ``ceil(log2(L + 1))`` bits.
"""
from __future__ import annotations

import math

import numpy as np

from .costs import Device, activity_costs, ann_energy, snn_energy, synaptic_ops

#: The profile of the fair quantised-ANN baseline.
FAIR_BASELINE = "45nm_int8"
PARTS = ("compute", "weights", "membrane", "bias", "io", "events")


def sram_access(device: Device, memory_bits: float, word_bits: float) -> float:
    """Joules of one access of ``word_bits`` to an SRAM of ``memory_bits`` on ``device`` (0 without SRAM law)."""
    if device.sram_energy_fixed is None:
        return 0.0
    return (device.sram_energy_per_bit * memory_bits + device.sram_energy_fixed) * word_bits / device.sram_access_bits


def fit_sram_law(points) -> tuple:
    """Least-squares ``(J per bit of capacity, J fixed)`` through ``(capacity bits, J per access)`` points."""
    capacity, energy = np.asarray(points, dtype=float).T
    slope, fixed = np.polyfit(capacity, energy, 1)
    return float(slope), float(fixed)


def level_bits(levels) -> int:
    """Bits of a quantised activation of ``levels`` levels (0..L): ``ceil(log2(L + 1))``; 8 without levels."""
    return 8 if not levels else max(1, math.ceil(math.log2(levels + 1)))


def _activation_bits(device: Device, levels) -> int:
    return level_bits(levels) if device.activation_bits == "levels" else device.activation_bits


def _parts() -> dict:
    return dict.fromkeys(PARTS, 0.0)


def _dense_traffic(r: dict, device: Device, bits_in: int, bits_out: int, evaluations: int = 1) -> dict:
    """Memory joules of one dense evaluation of synapse record ``r`` (ANN, or an SNN layer reading analog values)."""
    parts, w, acc = _parts(), device.weight_bits, device.accumulator_bits
    connections, inputs, outputs = r["connections"], r["inputs"], r["positions"] * r["channels"]
    if r["weights"]:
        parts["weights"] = connections / min(r["positions"], device.ann_output_tile) * \
            sram_access(device, r["weights"] * w, w)
        parts["bias"] = outputs * sram_access(device, r["channels"] * acc, acc)
    fan_out = connections / inputs if inputs else 0.0
    reads = connections / min(max(fan_out, 1.0), device.ann_channel_tile) if r["weights"] else connections
    parts["io"] = (reads + r["adds"]) * sram_access(device, inputs * bits_in, bits_in) + \
        outputs * sram_access(device, outputs * bits_out, bits_out)
    return {k: v * evaluations for k, v in parts.items()}


def _event_word(r: dict, device: Device) -> int:
    """Bits of one event: the address of the neuron that fired, plus the payload on a graded device."""
    return max(1, math.ceil(math.log2(max(r["inputs"], 2)))) + (int(r.get("payload_bits", 0)) if device.graded else 0)


def _spike_traffic(r: dict, op: dict, neurons: int, device: Device) -> dict:
    """Memory and event joules of a spike-driven synapse record ``r`` (operations ``op``) feeding ``neurons``."""
    parts, w, acc = _parts(), device.weight_bits, device.accumulator_bits
    sops = synaptic_ops(op, device)
    events = r["messages"] if device.graded and r.get("messages") is not None else r["events"]
    if r["weights"]:
        parts["weights"] = sops * sram_access(device, r["weights"] * w, w)
    parts["membrane"] = 2 * sops * sram_access(device, neurons * acc, acc)  # read-modify-write per SOP
    word = _event_word(r, device)
    parts["io"] = events * sram_access(device, device.event_queue_words * word, word)
    parts["events"] = events * (2 + r["kernel"]) * device.energy_per_address_op
    return parts


def _neuron_traffic(n: dict, channels: int, timesteps: int, device: Device) -> dict:
    """Per step, each neuron's membrane read and write and bias read; each event written out and sent."""
    parts, acc = _parts(), device.accumulator_bits
    updates = n["neurons"] * timesteps * n.get("updates_per_step", 1)
    parts["membrane"] = 2 * updates * sram_access(device, n["neurons"] * acc, acc)
    parts["bias"] = n["neurons"] * timesteps * sram_access(device, max(channels, 1) * acc, acc)
    events = n.get("messages", n["spikes"]) if device.graded else n["spikes"]
    word = max(1, math.ceil(math.log2(max(n["neurons"], 2))))
    parts["io"] = events * sram_access(device, device.event_queue_words * word, word)
    parts["events"] = events * device.energy_per_event
    return parts


def _input_bits(r: dict, device: Device, levels: dict) -> int:
    if device.activation_bits != "levels":
        return device.activation_bits
    return max((level_bits(levels.get(s)) for s in r.get("sources", [])), default=8)  # the image: 8-bit pixels


def _layer_parts(records: list, operations: list, timesteps: int, device: Device, levels: dict, snn: bool) -> list:
    """Memory and event joules (:data:`PARTS` less compute) of each record, for the SNN or (``snn=False``) ANN."""
    out, channels = [], 0
    for i, r in enumerate(records):
        if r["kind"] == "attention":
            out.append(_parts())
        elif r["kind"] == "neurons":
            out.append(_neuron_traffic(r, channels, timesteps, device) if snn else _parts())
        else:
            # records without a layout (spiking transformers): one weight per synapse, dense
            r = {"weights": r["connections"], "kernel": 1, "positions": 1, "channels": 0, "adds": 0} | r
            channels = r["channels"]
            following = records[i + 1] if i + 1 < len(records) and records[i + 1]["kind"] == "neurons" else None
            bits_out = device.accumulator_bits if snn or following is None else \
                _activation_bits(device, levels.get(following["name"]))
            if not snn:
                out.append(_dense_traffic(r, device, _input_bits(r, device, levels), bits_out))
            elif r["events"] is None:  # the image (once) or analog values (every step): dense
                out.append(_dense_traffic(r, device, _input_bits(r, device, {}), bits_out, r["evaluations"]))
            elif device.spiking:
                out.append(_spike_traffic(r, operations[i], r["positions"] * r["channels"], device))
            else:  # a non-spiking device computes every synapse every step, on binary inputs
                out.append(_dense_traffic(r, device, 1, bits_out, timesteps))
    return out


def _total(compute: list, parts: list) -> dict:
    total = {k: float(sum(p[k] for p in parts)) for k in PARTS}
    total["compute"] = float(sum(compute))
    return total


def model_energies(records: list, timesteps: int, device: Device, levels: dict | None = None) -> dict:
    """Joules per inference of the ANN and the SNN of activity ``records`` (:func:`costs.network_activity`) on
    ``device`` under both models: ``{"compute_only": {ann_J, snn_J}, "memory_aware": {ann_J, snn_J, ann_parts,
    snn_parts}}``. ``levels``: QCFS levels of each neuron layer by name (for ``activation_bits = "levels"``)."""
    levels = levels or {}
    costs, operations, _ = activity_costs(records, timesteps)
    ann_compute, snn_compute = ann_energy(costs, device), snn_energy(operations, device)
    ann = _total(ann_compute, _layer_parts(records, operations, timesteps, device, levels, snn=False))
    snn = _total(snn_compute, _layer_parts(records, operations, timesteps, device, levels, snn=True))
    return {"compute_only": {"ann_J": float(sum(ann_compute)), "snn_J": float(sum(snn_compute))},
            "memory_aware": {"ann_J": sum(ann.values()), "snn_J": sum(snn.values()), "ann_parts": ann,
                             "snn_parts": snn}}


def scale_activity(records: list, factor: float) -> list:
    """``records`` with every spike, message and event count times ``factor`` (the SNN's energy is affine in it)."""
    keys = ("events", "messages", "spikes", "rate")
    return [r | {k: r[k] * factor for k in keys if r.get(k) is not None} for r in records]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def energy_models(records: list, timesteps: int, devices: dict, levels: dict | None = None,
                  fair: Device | None = None) -> dict:
    """Both models on every device, the SNN against the ANN priced on the same device and against the fair
    quantised-ANN baseline (the ANN on ``fair``), and where the SNN breaks even with that baseline.

    ``break_even_sops_per_synapse``: the synaptic operations per ANN synapse (Dampfhoffer et al.'s spikes per
    synapse) at which the SNN's memory-aware joules equal the fair baseline's, the measured activity scaled;
    ``sops_per_synapse``: the measured value. None where no activity breaks even (a silent SNN already costs
    more) or the SNN's joules do not grow with activity.
    """
    fair_ann = model_energies(records, timesteps, fair, levels) if fair is not None else None
    _, operations, _ = activity_costs(records, timesteps)
    connections = sum(r["connections"] for r in records if r["kind"] == "synapse")
    result = {}
    for name, device in devices.items():
        both = model_energies(records, timesteps, device, levels)
        entry = {}
        for model in ("compute_only", "memory_aware"):
            e = both[model]
            entry[model] = e | {"snn_over_ann": _ratio(e["snn_J"], e["ann_J"])}
            if fair_ann is not None and device.spiking:  # on a GPU the 'SNN' is a dense ANN-like run: no SNN claim
                entry[model]["snn_over_fair_ann"] = _ratio(e["snn_J"], fair_ann[model]["ann_J"])
        sops = sum(synaptic_ops(o, device) for o in operations)
        entry["sops_per_synapse"] = sops / connections if connections else None
        entry["break_even_sops_per_synapse"] = None
        if fair_ann is not None and device.spiking and connections:
            idle = model_energies(scale_activity(records, 0.0), timesteps, device, levels)["memory_aware"]["snn_J"]
            slope = both["memory_aware"]["snn_J"] - idle
            scale = (fair_ann["memory_aware"]["ann_J"] - idle) / slope if slope > 0 and sops else -1.0
            if scale >= 0:  # else even a silent SNN (first layer, neuron updates) costs more: no break-even
                entry["break_even_sops_per_synapse"] = scale * sops / connections
        result[name] = entry
    baseline = None if fair_ann is None else {
        "device": fair.name, "compute_only_J": fair_ann["compute_only"]["ann_J"],
        "memory_aware_J": fair_ann["memory_aware"]["ann_J"], "parts": fair_ann["memory_aware"]["ann_parts"],
        "activation_bits": {n: level_bits(levels.get(n)) for n in (levels or {})}}
    return {"devices": result, "fair_baseline": baseline}

"""Operation counts and joules per device: the one costing path of ANNs and SNNs.

Device profiles are TOML files in the top-level ``energy/`` (one per device; see ``energy/README.md`` for the
method and sources), shipped as package data (``snn4vision.profiles``). Counting:

- ANN: every synapse is one multiply-accumulate (MAC) per inference (conv:
  ``H_out * W_out * k_h * k_w * C_in * C_out``; dense: ``in * out``); pooling
  and global average pooling are additions; every ReLU is a neuron update.
- SNN on a spiking (event-driven) device: the first layer sees the analog
  image, which is constant in time, so its MACs are paid once; every later
  layer pays one synaptic operation (SOP) per presynaptic spike and synapse
  (measured spikes x fan-out); neurons (and synaptic filters, when present)
  are updated every timestep.
- SNN on a non-spiking device: every synapse is computed every timestep.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass

import numpy as np

from .devices import ENERGY_DIR, PROFILE_KEYS, SRAM_KEYS, Device, check_profile, load_devices  # noqa: F401
from .ops import op_of


@dataclass
class LayerCost:
    """Per-inference counts of one layer (a linear node) of a network.

    ``connections``: synapses (= MACs of one dense evaluation); ``inputs``:
    the size of the layer's input, so ``connections / inputs`` is the mean
    fan-out of one input value; ``neurons``: spiking/ReLU units it feeds
    (``feeds``: those neuron layers' indices); ``adds``: additions before it
    (pooling, residual adds). ``sources``: the neuron layers (indices) whose
    spikes reach it; ``analog``: ``"once"``
    when it reads the constant image (MACs once per inference),
    ``"every_step"`` when it reads analog values that change every step,
    ``""`` when it reads spikes.
    """

    name: str
    connections: int
    inputs: int
    neurons: int
    adds: int = 0
    sources: tuple = ()
    analog: str = ""
    feeds: tuple = ()
    # the layout the memory-aware model needs: weights stored, kernel positions, output positions and channels
    weights: int = 0
    kernel: int = 1
    positions: int = 1
    channels: int = 0

    @property
    def fan_out(self) -> float:
        return self.connections / self.inputs if self.inputs else 0.0


def _size(shape) -> int:
    return int(np.prod(shape))


def _signals(nodes: list, neuron_index: dict) -> tuple[dict, dict]:
    """Per node, the neuron layers whose spikes it carries and what it carries: ``"static"`` (the image only),
    ``"analog"`` (a linear node's currents, or a mix with them) or ``"spikes"``."""
    carried, kind = {}, {}
    for node in nodes:
        ins = node.inputs
        if node.op == "input":
            carried[node.name], kind[node.name] = (), "static"
        elif node.op == "neuron":
            carried[node.name], kind[node.name] = (neuron_index[node.name],), "spikes"
        elif op_of(node).linear:
            carried[node.name] = ()
            kind[node.name] = "static" if kind[ins[0]] == "static" else "analog"
        else:
            carried[node.name] = tuple(sorted({s for i in ins for s in carried[i]}))
            kinds = {kind[i] for i in ins}
            kind[node.name] = "static" if kinds == {"static"} else ("analog" if "analog" in kinds else "spikes")
    return carried, kind


def graph_costs(nodes: list, output: str) -> list:
    """Counts of a layer graph (:class:`snn4vision.layer_graph.Node` list in topological order), one row per
    linear node (conv, depthwise conv, dense) and per average pooling of spikes that feeds neurons directly (a
    requantised pooled map): there each input is one synapse (a MAC in the ANN, a SOP per spike in the SNN).

    Each neuron layer is charged to the row that computes its input; the additions of other pooling, global
    pooling and residual adds to the first linear node after them.
    """
    by_name = {n.name: n for n in nodes}
    consumers = {n.name: [] for n in nodes}
    for node in nodes:
        for i in node.inputs:
            consumers[i].append(node.name)
    neuron_index = {n.name: i for i, n in enumerate(n for n in nodes if n.op == "neuron")}
    carried, kind = _signals(nodes, neuron_index)
    pooling = {n.name for n in nodes if op_of(n).feeds_neurons_as_synapses() and kind[n.inputs[0]] == "spikes"
               and consumers[n.name] and all(by_name[c].op == "neuron" for c in consumers[n.name])}
    linear = [n for n in nodes if op_of(n).linear or n.name in pooling]
    rows = {}
    for node in linear:
        source = by_name[node.inputs[0]]
        connections, weights, kernel = op_of(node).synapses(node, source)
        analog = {"static": "once", "analog": "every_step", "spikes": ""}[kind[node.inputs[0]]]
        rows[node.name] = LayerCost(node.name, connections, _size(source.shape), 0, 0, carried[node.inputs[0]],
                                    analog, weights=weights, kernel=kernel, positions=_size(node.shape[:-1]),
                                    channels=int(node.shape[-1]))
    position = {n.name: i for i, n in enumerate(nodes)}

    def upstream_linear(name):
        """The linear node that computes a neuron's input current (through adds and pooling, not neurons)."""
        frontier = [name]
        while frontier:
            current = frontier.pop(0)
            if current in rows:
                return rows[current]
            if by_name[current].op not in ("neuron", "input"):
                frontier += by_name[current].inputs
        return next(iter(rows.values()))

    def downstream_linear(name):
        reached, frontier = [], list(consumers[name])
        while frontier:
            current = frontier.pop()
            if current in rows:
                reached.append(current)
            else:
                frontier += consumers[current]
        return rows[min(reached, key=position.get)] if reached else list(rows.values())[-1]

    for node in nodes:
        if node.op == "neuron":
            row = upstream_linear(node.inputs[0])
            row.neurons += _size(node.shape)
            row.feeds += (neuron_index[node.name],)
        elif node.op != "input" and node.name not in rows:
            adds = op_of(node).adds(node, [by_name[i].shape for i in node.inputs])
            if adds:  # pooling, global pooling and residual adds
                downstream_linear(node.name).adds += adds
    return list(rows.values())


def network_activity(layers: list, neurons: list, spikes_per_layer, timesteps: int, synapse: bool,
                     events_per_layer=None, payload_bits: int = 0) -> list:
    """The activity records (:func:`activity_costs`) of a converted network from its measured spikes.

    ``layers``: :func:`graph_costs`' rows; ``neurons``: ``(name, size)`` of each neuron layer;
    ``spikes_per_layer[l]``: spikes of neuron layer ``l`` per image over the ``timesteps`` steps. Each linear
    node is a ``synapse`` record whose events are its sources' spikes (none where it reads analog values: the
    image once, or analog values every step), followed by the ``neurons`` records of the layers it feeds
    (with a synaptic filter, two updates per neuron and step).

    ``events_per_layer[l]``: messages of layer ``l`` where a burst of spikes in one step is one message
    (default: one per spike); ``payload_bits``: the bits a graded message carries. The memory-aware model
    (:mod:`snn4vision.memory_costs`) reads them and each layer's layout (``weights``, ``kernel``, ...).
    """
    events_per_layer = spikes_per_layer if events_per_layer is None else events_per_layer
    records = []
    for cost in layers:
        events = None if cost.analog else float(sum(float(spikes_per_layer[s]) for s in cost.sources))
        messages = None if cost.analog else float(sum(float(events_per_layer[s]) for s in cost.sources))
        records.append({"kind": "synapse", "name": cost.name, "connections": cost.connections, "inputs": cost.inputs,
                        "adds": cost.adds, "evaluations": timesteps if cost.analog == "every_step" else 1,
                        "events": events, "messages": messages, "payload_bits": payload_bits,
                        "sources": [neurons[i][0] for i in cost.sources], "weights": cost.weights,
                        "kernel": cost.kernel, "positions": cost.positions, "channels": cost.channels})
        for index in cost.feeds:
            name, size = neurons[index]
            spikes = float(spikes_per_layer[index])
            records.append({"kind": "neurons", "name": name, "neurons": size, "spikes": spikes,
                            "messages": float(events_per_layer[index]),
                            "rate": spikes / (size * timesteps), "updates_per_step": 2 if synapse else 1})
    return records


def drive_input_by_events(records: list, input_events: float, layer_costs: list | None = None) -> None:
    """Event input presented one frame per step: the layers that read the input cost one SOP per input event
    and synapse, as a spike would, not MACs of an analog frame (``records`` are changed in place).

    ``layer_costs``: a converted SNN's (its layers whose ``analog`` is ``"once"`` read the input, in the order
    of its synapse records); None: a spiking transformer's records, whose first synapse (the patch splitting's
    first conv) reads it.
    """
    synapses = [r for r in records if r["kind"] == "synapse"]
    readers = synapses[:1] if layer_costs is None else [
        record for record, cost in zip(synapses, layer_costs) if cost.analog == "once"]
    for record in readers:
        record["events"] = record["messages"] = input_events


def activity_costs(records: list, timesteps: int, dt: float = 0.001) -> tuple:
    """Counts of a spiking network from its measured activity records: the one counting path of converted
    networks (:func:`network_activity`) and spiking transformers (:func:`snn4vision.transformers.measure`).

    Returns ``(costs, operations, rates_hz)``, one row per record: synapses (one SOP per measured input spike,
    or unit of a spike count, and synapse; analog inputs as MACs per evaluation), attention products (the
    measured accumulates; the same product with dense operands on non-spiking hardware) and neuron layers
    (``updates_per_step`` updates per neuron and step, default 1; firing rate in Hz at ``dt`` seconds per
    step). ``connections`` of the attention rows and the neuron counts are what one dense (ANN-like) pass of
    the same network computes, ``adds`` (pooling, residual adds) what it adds besides.
    """
    costs, operations, rates = [], [], []
    for e in records:
        if e["kind"] == "neurons":
            costs.append(LayerCost(e["name"], 0, 0, e["neurons"]))
            operations.append({"macs": 0.0, "sops": 0.0, "dense_synops": 0.0,
                               "updates": float(e["neurons"] * timesteps * e.get("updates_per_step", 1))})
            rates.append(e["rate"] / dt)
            continue
        if e["kind"] == "attention":
            costs.append(LayerCost(e["name"], e["dense_macs"], 0, 0))
            operations.append({"macs": 0.0, "sops": float(e["accumulates"]), "updates": 0.0,
                               "dense_synops": float(e["dense_macs"] * timesteps)})
        elif e["events"] is None:  # analog input: multiply-accumulates
            macs = float(e["connections"] * e["evaluations"])
            costs.append(LayerCost(e["name"], e["connections"], e["inputs"], 0, e.get("adds", 0)))
            operations.append({"macs": macs, "sops": 0.0, "updates": 0.0, "dense_synops": macs})
        else:
            cost = LayerCost(e["name"], e["connections"], e["inputs"], 0, e.get("adds", 0))
            costs.append(cost)
            operations.append({"macs": 0.0, "sops": float(e["events"]) * cost.fan_out, "updates": 0.0,
                               "dense_synops": float(e["connections"] * timesteps)})
            if e.get("messages") is not None:  # graded devices pay one SOP per message and synapse
                operations[-1] |= {"event_sops": float(e["messages"]) * cost.fan_out,
                                   "payload_bits": float(e.get("payload_bits", 0))}
        rates.append(None)
    return costs, operations, rates


def sop_weights(costs: list, neurons: list) -> list:
    """For each neuron layer ``l`` (``neurons[l]`` units), the SOP/MAC that one spike per neuron of that layer
    adds: ``neurons_l * (fan-out of the layers its spikes reach) / (MACs of the ANN)``. A layer before a
    pooling weighs about 4x (its spikes reach the next layer unpooled); the sum over layers of weight x spikes
    per neuron is the SNN's SOP/MAC without the MACs of its analog layers."""
    macs = sum(cost.connections for cost in costs)
    fan_out = [0.0] * len(neurons)
    for cost in costs:
        for source in cost.sources:
            fan_out[source] += cost.fan_out
    return [n * f / macs for n, f in zip(neurons, fan_out)]


def ann_energy(costs: list, device: Device) -> list:
    """Joules per inference of each layer of the ANN on ``device``."""
    return [c.connections * device.mac + c.adds * device.energy_per_synop + c.neurons * device.energy_per_neuron
            for c in costs]


def snn_energy(operations: list, device: Device) -> list:
    """Joules per inference of each SNN layer on ``device``.

    Spiking devices pay for spikes (SOPs); non-spiking devices compute every
    synapse every timestep (``dense_synops``).
    """
    if device.spiking:
        return [o["macs"] * device.mac + synaptic_ops(o, device) * device.energy_per_synop
                + graded_payload(o, device) + o["updates"] * device.energy_per_neuron for o in operations]
    return [o["dense_synops"] * device.mac + o["updates"] * device.energy_per_neuron for o in operations]


def synaptic_ops(operation: dict, device: Device) -> float:
    """SOPs on ``device``: one per spike and synapse; on a graded device one per message (a burst) and synapse."""
    return operation.get("event_sops", operation["sops"]) if device.graded else operation["sops"]


def graded_payload(operation: dict, device: Device) -> float:
    """Joules of the payloads of a graded device's SOPs (each multiplies its weight by the payload)."""
    if not device.graded:
        return 0.0
    return operation.get("event_sops", 0.0) * operation.get("payload_bits", 0.0) * device.energy_per_payload_bit


def energy_table(costs: list, operations: list, rates_hz: list, devices: dict) -> list:
    """One row per layer with counts, firing rate and joules per device, plus a total row."""
    rows = []
    ann = {name: ann_energy(costs, d) for name, d in devices.items()}
    snn = {name: snn_energy(operations, d) for name, d in devices.items()}
    for i, (cost, ops) in enumerate(zip(costs, operations)):
        row = {"layer": cost.name, "ann_macs": cost.connections, "ann_adds": cost.adds, "neurons": cost.neurons,
               "snn_macs": ops["macs"], "snn_sops": ops["sops"], "snn_updates": ops["updates"],
               "sop_per_mac": sop_per_mac([ops], [cost]),
               "firing_rate_hz": rates_hz[i] if i < len(rates_hz) else None}
        for name in devices:
            row[f"ann_J_{name}"] = ann[name][i]
            row[f"snn_J_{name}"] = snn[name][i]
        rows.append(row)
    total = {"layer": "total", "firing_rate_hz": None, "sop_per_mac": sop_per_mac(operations, costs)}
    for key in rows[0]:
        if key not in total:
            total[key] = float(sum(r[key] for r in rows))
    rows.append(total)
    return rows


def sop_per_mac(operations: list, costs: list) -> float | None:
    """The SNN's synaptic operations (and the MACs of its analog first layer) per MAC of the ANN.

    Below 1 the SNN does less synaptic work than its ANN, so it costs less on any device where a synaptic
    event costs no more than a MAC (neuron updates aside). None where the ANN does no MACs.
    """
    macs = sum(cost.connections for cost in costs)
    return (sum(o["macs"] + o["sops"] for o in operations) / macs) if macs else None


def rows_to_csv(rows: list) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def summary(total: dict, devices: dict) -> dict:
    """Totals per device and the SNN/ANN ratio."""
    return {name: {"ann_J": total[f"ann_J_{name}"], "snn_J": total[f"snn_J_{name}"],
                   "snn_over_ann": total[f"snn_J_{name}"] / total[f"ann_J_{name}"] if total[f"ann_J_{name}"] else math.nan,
                   "spiking": d.spiking} for name, d in devices.items()}


def device_table(devices: dict) -> list:
    return [asdict(d) | {"energy_per_mac": d.mac} for d in devices.values()]

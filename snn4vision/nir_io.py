"""Converted spiking networks as NIR graphs (the Neuromorphic Intermediate Representation, ``nir`` on PyPI).

:func:`to_nir` writes a :class:`~snn4vision.simulation.SpikingNetwork` as NIR
primitives that hardware toolchains (Lava for Loihi 2, SpiNNaker2, SynSense's
Speck and Xylo) and other frameworks (sinabs, snntorch, norse, rockpool,
spikingjelly) read. Keras layouts become NIR's: kernels ``(out, in, kh, kw)``,
maps ``(channels, height, width)``, dense weights ``(out, in)``.

Exact where NIR can say it:

- A neuron's spike is 1 in NIR and ``threshold`` in our simulator: the
  threshold is folded into the weights of the layers the spike feeds.
- Average pooling becomes ``SumPool2d`` (what event-driven chips implement)
  with its ``1 / window`` folded into the next layer's weights; global
  average pooling becomes a ``SumPool2d`` over the whole map and a ``Flatten``.
- A gain or scale that reaches a neuron directly is folded into its
  threshold; elsewhere it becomes a ``Scale`` node.
- Keras's 'same' padding with stride 2 pads one more row at the bottom than
  at the top, which NIR's symmetric padding cannot state: such a kernel gets
  a leading row (column) of zeros and one more padding on each side, which
  reads exactly the same pixels.
- A residual add becomes what NIR does with several edges into one node: it
  sums them.

Two things a discrete-time run needs that NIR 1.0's primitives do not hold
go into each neuron node's ``metadata`` (and are summarised in the graph's):

- ``reset``: ``"subtract"`` (our IF neurons keep what exceeds the threshold)
  or ``"zero"``. NIR's neurons are defined in continuous time, where the two
  are the same (the membrane never exceeds the threshold); a time-stepped
  importer chooses, and should choose what the metadata says.
- ``v_initial``: the membrane at t = 0 (half the threshold for QCFS-converted
  IF neurons; NIR has no initial state).

The graph's ``metadata`` holds ``dt``, ``timesteps``, the input's layout and
encoding, and the read-out (mean of the output over the last
``readout_steps`` steps). What NIR cannot express stops the export with a
:class:`~snn4vision.errors.UserError` that names the way out
(:func:`nir_problems`).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import nir
import numpy as np

from .checkpoints import atomic_write
from .errors import UserError, write_failure
from .layer_graph import ONE, rescale
from .ops import Term, op_of

#: Neurons NIR can express (signed IF has negative spikes; keras-spiking's neuron integrates relu(input) from
#: random initial voltages).
EXPORTABLE_NEURONS = ("if", "lif")
#: How the image enters the network, written into the graph's metadata.
INPUT_ENCODING = ("the image, channels first, as an input current held constant over all timesteps: each step "
                  "adds the first layer's response to the image to its neurons' membranes")


def nir_problems(model: SpikingNetwork) -> list:
    """What stops ``model`` from being written as NIR, one line each naming the fix (empty: it can be)."""
    problems = []
    if model.neuron == "signed_if":
        problems.append("signed IF neurons fire negative spikes, which NIR's neurons cannot: pass --approximate "
                        "to export plain IF neurons (its accuracy cost is measured and reported)")
    elif model.neuron not in EXPORTABLE_NEURONS:
        problems.append(f"{model.neuron} neurons integrate relu(input) from random initial voltages, which NIR's "
                        f"IF and LIF neurons cannot: convert a QCFS network (train_ann.py --activation qcfs), "
                        f"whose IF neurons export exactly")
    if model.max_spikes > 1:
        problems.append(f"bursts of up to {model.max_spikes} spikes per step: NIR's neurons fire at most one; "
                        f"pass --approximate to export single spikes")
    if model.tau is not None:
        problems.append("the low-pass synapses follow keras-spiking neurons, which NIR cannot express (above)")
    if model.neuron == "lif" and not 0.0 < model.leak <= 1.0:
        problems.append(f"LIF leak {model.leak}: NIR's LIF needs a leak in (0, 1] (a time constant above 0)")
    for node in model.nodes:
        problem = op_of(node).nir_problem(node, model)
        if problem:
            problems.append(problem)
    return problems


def approximated(model) -> tuple:
    """``(model, changes)``: ``model`` as NIR's neurons can run it (plain IF neurons for signed ones, single spikes
    for bursts; the same weights), and one line per change (none: ``model`` itself)."""
    overrides = ({"max_spikes": 1} if model.max_spikes > 1 else {}) | (
        {"neuron": "if"} if model.neuron == "signed_if" else {})
    if not overrides:
        return model, []
    changes = ([f"{model.neuron} neurons exported as plain IF neurons"] if "neuron" in overrides else []) + (
        [f"bursts of up to {model.max_spikes} spikes per step exported as single spikes"]
        if "max_spikes" in overrides else [])
    exported = type(model).from_config(model.get_config() | overrides)
    exported.set_weights(model.get_weights())
    return exported, changes


@dataclass
class _Export:
    """A NIR export in progress, which each node's op (:meth:`snn4vision.ops.GraphOp.to_nir`) adds to: the NIR
    ``nodes`` and ``edges``, and ``terms``, our node -> the NIR terms whose sum it is (in our units)."""

    model: object
    weights: dict
    gains: dict
    thresholds: dict
    plan: dict
    reset: str
    nodes: dict
    edges: list
    terms: dict

    def input_of(self, node):
        """Our node that ``node`` reads first."""
        return next(n for n in self.model.nodes if n.name == node.inputs[0])

    def sources(self, node) -> list:
        """The NIR terms of ``node``'s inputs."""
        return [t for i in node.inputs for t in self.terms[i]]

    def to_scale(self, have: str, need: str) -> float:
        """The factor that brings a value at scale ``have`` to scale ``need``."""
        return rescale(1.0, have, need, self.gains)

    def feed(self, target: str, sources: list, factor: float) -> None:
        """Edges into NIR node ``target`` from ``sources``, which it reads multiplied by ``factor`` (already
        folded into the target): terms of another factor pass through a Scale node."""
        for term in sources:
            ratio = term.factor / factor
            if math.isclose(ratio, 1.0, rel_tol=1e-6):
                self.edges.append((term.source, target))
            else:
                name = f"{term.source}_to_{target}_scale"
                shape = np.asarray(self.nodes[term.source].output_type["output"])
                self.nodes[name] = nir.Scale(scale=np.full(shape, ratio, np.float32))
                self.edges.extend([(term.source, name), (name, target)])


def to_nir(model: SpikingNetwork, timesteps: int | None = None) -> nir.NIRGraph:
    """``model`` as a NIR graph to be run for ``timesteps`` steps (default: the model's).

    Raises :class:`UserError` listing :func:`nir_problems`.
    """
    problems = nir_problems(model)
    if problems:
        raise UserError("this SNN cannot be written as NIR: " + "; ".join(problems))
    timesteps = int(timesteps or model.timesteps)
    weights = {name: (np.asarray(k, np.float32), None if b is None else np.asarray(b, np.float32))
               for name, (k, b) in model.effective_weights().items()}
    gains = {name: float(g) for name, g in model._gains().items()}
    thresholds = dict(zip(gains, np.asarray(model.thresholds, np.float64)))
    plan = model.plan
    export = _Export(model, weights, gains, thresholds, plan, reset_rule(model), {}, [], {})
    nodes, edges = export.nodes, export.edges
    image = model.nodes[0].shape
    nodes["input"] = nir.Input(input_type={"input": np.asarray([image[2], image[0], image[1]])})
    export.terms["input"] = [Term("input", 1.0)]
    for node in model.nodes[1:]:
        op_of(node).to_nir(node, export)  # nir_problems() refused what has no rule
    output = model.graph["output"]
    nodes["output"] = nir.Output(output_type={"output": np.asarray([model.num_classes])})
    export.feed("output", [Term(t.source, t.factor * export.to_scale(plan[output].output, ONE))
                           for t in export.terms[output]], 1.0)
    readout_steps = int(min(model.readout_steps or timesteps, timesteps))
    metadata = {"producer": "snn4vision", "dt": float(model.dt), "timesteps": timesteps,
                "readout": f"class scores: the mean of the output over the last {readout_steps} of the "
                           f"{timesteps} steps", "readout_steps": readout_steps,
                "input_encoding": INPUT_ENCODING, "neuron": model.neuron,
                "reset": reset_rule(model), "v_initial": "half the threshold (each neuron node's metadata)"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def reset_rule(model: SpikingNetwork) -> str:
    """How the model's neurons reset after a spike: ``"subtract"`` the threshold or to ``"zero"``."""
    return getattr(model.cell, "reset", "subtract")


def _topological(graph: nir.NIRGraph) -> list:
    """The graph's node names, each after all the nodes it reads."""
    order, done = [], set()
    while len(order) < len(graph.nodes):
        ready = [name for name in graph.nodes
                 if name not in done and all(a in done for a, b in graph.edges if b == name)]
        if not ready:
            raise UserError("the NIR graph has a cycle: the sinabs check runs feed-forward graphs only")
        order += ready
        done.update(ready)
    return order


def write_nir(path, graph: nir.NIRGraph) -> None:
    """Write ``graph`` to ``path`` with ``nir.write``, atomically; a refused write (read-only place, full disk) is
    one UserError and leaves no temporary file."""
    # HDF5 serialises into memory, where a full disk cannot reach it (writing to a full disk, it crashed the
    # process and left its temporary file); the bytes then go out through Python, which raises OSError
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    try:
        atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    except OSError as exc:
        raise write_failure(exc, path, "choose an --out in a writable folder") from None


def run_in_sinabs(graph: nir.NIRGraph, images: np.ndarray, timesteps: int, batch_size: int = 32) -> dict:
    """Run a NIR graph read with ``nir.read`` in sinabs (``pip install -e ".[nir]"``), an independent simulator.

    ``images``: ``(n, h, w, c)``, held as the input for ``timesteps`` steps. Returns per-step outputs
    ``"logits": (n, T, classes)``, ``"spikes": {neuron node: (n,) spikes over the run}`` and ``"framework"``.

    Each node is built by sinabs's own NIR importer (``sinabs.nir``: torch's conv, linear and sum pooling,
    sinabs's IAF and LIF layers) and the graph is wired by nirtorch's ``nir_to_torch``, which runs any DAG (the
    older ``nirtorch.load`` that ``sinabs.from_nir`` calls orders nodes depth first, which breaks residual
    graphs). Where they depart from NIR, this sets what the file says: several edges into a node are summed
    (nirtorch passes them as separate arguments); one spike per step (NIR's ``z`` is 0 or 1; sinabs defaults to
    several); no floor on the membrane (sinabs clips it at ``-v_threshold``); each node's ``metadata``: its reset
    rule and initial membrane. A LIF node's time constant goes to sinabs in steps (``tau / dt``). ``Scale``
    nodes, which sinabs's importer lacks, multiply by their ``scale``.
    """
    try:
        import nirtorch
        import sinabs
        import sinabs.layers as sl
        import torch
        from sinabs.activation import MembraneReset, MembraneSubtract, SingleSpike
    except ImportError:
        raise UserError('the sinabs check needs sinabs and torch: pip install -e ".[nir]"') from None

    class Scale(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.register_buffer("scale", torch.as_tensor(np.asarray(scale, np.float32)))

        def forward(self, x):
            return x * self.scale

    class Summed(torch.nn.Module):
        """A sinabs layer fed the sum of its inputs."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, *inputs):
            return self.layer(sum(inputs[1:], inputs[0]))

    dt = float(graph.metadata["dt"])
    names = {id(node): name for name, node in graph.nodes.items()}
    neurons = {}  # node name -> (sinabs layer, NIR node)

    def module(node):
        if isinstance(node, nir.Conv2d) and int(node.groups) > 1:
            raise UserError(f"{names[id(node)]}: sinabs's NIR importer builds a grouped conv (groups > 1) with the "
                            f"wrong number of input channels: check this network without --check sinabs")
        layer = Scale(node.scale) if isinstance(node, nir.Scale) else sinabs.nir._import_sinabs_module(
            node, batch_size=None, num_timesteps=timesteps)
        if isinstance(layer, (sl.IAFSqueeze, sl.LIFSqueeze)):
            layer.spike_fn, layer.min_v_mem = SingleSpike, None
            reset = node.metadata["reset"]
            reset = reset.decode() if isinstance(reset, bytes) else str(reset)
            layer.reset_fn = MembraneSubtract() if reset == "subtract" else MembraneReset()
            if isinstance(layer, sl.LIFSqueeze):
                layer.tau_mem.data = torch.as_tensor(np.asarray(node.tau, np.float32) / dt)
            neurons[names[id(node)]] = (layer, node)
        return Summed(layer)

    ordered = nir.NIRGraph(nodes={name: graph.nodes[name] for name in _topological(graph)}, edges=graph.edges,
                           metadata=graph.metadata)  # the interpreter gives up on nodes met long before their inputs
    network = nirtorch.nir_to_torch(ordered, {type(n): module for n in graph.nodes.values()})
    counts = {name: [] for name in neurons}
    for name, (layer, _) in neurons.items():
        layer.register_forward_hook(lambda mod, args, out, name=name: counts[name].append(
            out.reshape(-1, timesteps, out[0].numel()).sum(dim=(1, 2))))
    logits = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.as_tensor(np.asarray(images[start:start + batch_size], np.float32)).permute(0, 3, 1, 2)
            n = batch.shape[0]
            for layer, node in neurons.values():
                layer.init_state_with_shape((n, *node.v_threshold.shape))
                layer.v_mem.fill_(float(node.metadata["v_initial"]))
            frames = batch[:, None].expand(n, timesteps, *batch.shape[1:]).reshape(n * timesteps, *batch.shape[1:])
            out = network(frames)[0]
            logits.append(out.reshape(n, timesteps, -1).numpy())
    return {"logits": np.concatenate(logits), "framework": f"sinabs {sinabs.__version__}",
            "spikes": {name: torch.cat(c).numpy() for name, c in counts.items()}}

"""One run of a :class:`~snn4vision.simulation.SpikingNetwork` over time: the state every node keeps between steps,
the step that ``tf.while_loop`` repeats, and the outputs gathered after it (:meth:`SpikingNetwork.simulate`)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..errors import UserError
from ..layer_graph import ONE, rescale
from ..neurons import layer_seed
from ..ops import op_of


def outside_band(values, band):
    """How far each of ``values`` lies outside ``band = (low, high)``: 0 inside it."""
    low, high = band
    return tf.nn.relu(low - values) + tf.nn.relu(values - high)


@tf.custom_gradient
def _straight_through(rates, spikes):
    """Forward: ``spikes`` exactly; backward: the gradient goes to ``rates``."""
    return tf.identity(spikes), lambda grad: (grad, tf.zeros_like(spikes))


def readout(per_step_logits, steps=None):
    """Mean of the last ``steps`` per-step logits ``(batch, time, classes)`` (None: all)."""
    if steps is not None:
        per_step_logits = per_step_logits[:, -steps:]
    return tf.reduce_mean(per_step_logits, axis=1)


class Run:
    """``model`` run for ``timesteps`` steps on ``images`` (see :meth:`SpikingNetwork.simulate` for the shapes).

    What depends on the image only is computed here, once (unless the input is one frame per step); the loop
    carries, per neuron node, its state, its synaptic filter and (with ``return_outputs``) the sum of its
    outputs, the state of ops that keep one (a rate-gated max pooling), and per step the read-out features,
    spike counts, messages and (in training) filtered rates.
    """

    def __init__(self, model, images, timesteps: int, training: bool, return_outputs: bool):
        self.model, self.timesteps, self.training, self.return_outputs = model, timesteps, training, return_outputs
        self.images = tf.convert_to_tensor(images, tf.float32)
        # (batch, T, ...) frames (an event recording binned into T steps): frame t is the input of step t, and the
        # nodes that depend on the input alone run on every step instead of once
        self.per_step = self.images.shape.rank == len(model.nodes[0].shape) + 2
        if self.per_step and isinstance(timesteps, int) and self.images.shape[1] not in (None, timesteps):
            raise UserError(f"the input holds {self.images.shape[1]} frames for {timesteps} steps: bin the "
                            f"recordings into {timesteps} frames")
        self.batch = tf.shape(self.images)[0]
        self.dt = tf.maximum(model.dt_weight, 1e-8)
        self.gains = model._gains()
        self.compression = model.node_compression(timesteps)
        self.thresholds = {name: threshold / self.compression[name]
                           for name, threshold in zip(self.gains, tf.unstack(model.thresholds))}
        self.weights = model.effective_weights()
        self.static = {}  # the values every step starts from: none when the input changes at every step
        if not self.per_step:
            self.static["input"] = self.images
            for node in model.nodes[1:]:
                if node.name in model.static:
                    self.static[node.name] = self.apply(node, [self.static[i] for i in node.inputs])
        self.recomputed = [n for n in model.nodes[1:] if n.name in model.static] if self.per_step else []
        self.looped = [n for n in model.nodes if n.name not in model.static and n is not model.tail]
        self.read = model.tail.inputs[0] if model.tail is not None else model.graph["output"]
        self.band = training and model.rate_l2 > 0
        self.decays = {n.name: tf.exp(-self.dt / tf.maximum(tau, 1e-8))
                       for n, tau in zip(model.neuron_nodes, model.taus)}

    def apply(self, node, xs):
        """A non-neuron node's output (inputs of an add or concat brought to its scale first)."""
        op, plan = op_of(node), self.model.plan[node.name]
        if op.linear:
            return op.forward(node, xs, *self.weights[node.name])
        if op.meets:
            xs = [rescale(x, have, plan.output, self.gains) for x, have in zip(xs, plan.inputs)]
        return op.forward(node, xs)

    def _full(self, node):
        return tf.concat([[self.batch], node.shape], 0)

    def initial(self) -> tuple:
        """The loop's variables at step 0 (the order :meth:`step` takes them in)."""
        model, steps = self.model, self.timesteps
        states = {n.name: model.cell.initial_state(self._full(n), self.thresholds[n.name], layer_seed(model.seed, i))
                  for i, n in enumerate(model.neuron_nodes)}
        filters = {n.name: tf.zeros(self._full(n)) for n in model.neuron_nodes} if model.taus else {}
        held = {n.name: op_of(n).spiking_state(n, self._full(model._input_of(n))) for n in model.nodes
                if n.op != "neuron" and op_of(n).stateful and n.name not in model.static}
        sums = {n.name: tf.zeros(self._full(n)) for n in model.neuron_nodes} if self.return_outputs else {}
        rates = tf.TensorArray(tf.float32, size=steps if self.training else 0, dynamic_size=not self.training)
        return (tf.constant(0), states, filters, held, sums, tf.TensorArray(tf.float32, size=steps),
                tf.TensorArray(tf.float32, size=steps), tf.TensorArray(tf.float32, size=steps), rates,
                tf.zeros([self.batch]))  # per image: squared distance of the spike rates from the band, summed

    def fire(self, node, x, t, state, filtered):
        """One step of neuron ``node`` on input ``x``: ``(state, output, spikes counted, messages, band term,
        mean filtered output)`` (the last two None where not needed)."""
        model, cell, name = self.model, self.model.cell, node.name
        h = rescale(x, model.plan[name].inputs[0], name, self.gains)
        threshold, compression = self.thresholds[name], self.compression[name]
        drive = cell.drive(h, threshold * compression)
        # L (t + 1) / T may land a float rounding below the integer it stands for
        ceiling = tf.floor(tf.cast(t + 1, tf.float32) * compression + 1e-3)
        state, n, spikes = cell.step(tuple(tf.stop_gradient(s) for s in state), tf.stop_gradient(h), threshold,
                                     self.dt, ceiling)
        fired = cell.spikes(n)
        if self.training:
            spikes = _straight_through(drive, spikes)
            # backward, spikes per step follow the drive in spike units: the gradient of the rate
            fired = _straight_through(drive * cell.spike_unit(threshold, self.dt), fired)
        axes = list(range(1, len(node.shape) + 1))
        # a burst is one message on graded-spike hardware (costs.Device.graded)
        messages = tf.reduce_sum(tf.cast(tf.not_equal(tf.stop_gradient(fired), 0.0), tf.float32), axis=axes)
        band = tf.reduce_sum(outside_band(spikes, model.rate_band) ** 2, axis=axes) if self.band else None
        out = spikes if filtered is None else (1 - self.decays[name]) * spikes + self.decays[name] * filtered
        rate = tf.reduce_mean(out, axis=axes) if self.training else None
        return state, out, tf.reduce_sum(fired, axis=axes), messages, band, rate

    def step(self, t, states, filters, held, sums, features, counts, messages, rates, outside):
        values = dict(self.static)
        if self.per_step:
            values["input"] = self.images[:, t]
            for node in self.recomputed:
                values[node.name] = self.apply(node, [values[i] for i in node.inputs])
        states, filters, held, sums = dict(states), dict(filters), dict(held), dict(sums)
        step_counts, step_rates, step_messages = [], [], []
        for node in self.looped:
            xs = [values[i] for i in node.inputs]
            name = node.name
            if node.op == "neuron":
                states[name], out, fired, sent, band, rate = self.fire(node, xs[0], t, states[name],
                                                                       filters.get(name))
                step_counts.append(fired)
                step_messages.append(sent)
                if band is not None:
                    outside = outside + band
                if name in filters:
                    filters[name] = out
                if rate is not None:
                    step_rates.append(rate)
                if name in sums:
                    sums[name] = sums[name] + out
                values[name] = out
            elif name in held:
                values[name], held[name] = op_of(node).spiking_step(node, xs, held[name])
            else:
                values[name] = self.apply(node, xs)
        features = features.write(t, values[self.read])
        counts = counts.write(t, tf.stack(step_counts, axis=1))
        messages = messages.write(t, tf.stack(step_messages, axis=1))
        if self.training:
            rates = rates.write(t, tf.stack(step_rates, axis=1))
        return t + 1, states, filters, held, sums, features, counts, messages, rates, outside

    def results(self, sums, features, counts, messages, rates, outside) -> dict:
        model = self.model
        per_step = tf.transpose(features.stack(), [1, 0, *range(2, 1 + len(model._node(self.read).shape) + 1)])
        if model.tail is not None:
            kernel, bias = self.weights[model.tail.name]
            logits = tf.einsum("btf,fc->btc", per_step, kernel)
            logits = logits if bias is None else logits + bias
        else:
            logits = rescale(per_step, model.plan[self.read].output, ONE, self.gains)
        spikes = tf.transpose(counts.stack(), [1, 0, 2])
        result = {"logits": logits, "spikes": spikes, "events": tf.transpose(messages.stack(), [1, 0, 2]),
                  "activity": spikes / np.asarray(model.neurons_per_layer(), np.float32)}
        if self.training:
            result["rates"] = tf.transpose(rates.stack(), [1, 0, 2])
        if self.band:
            result["rate_band_l2"] = outside
        if self.return_outputs:
            result["outputs"] = {name: total / (tf.cast(self.timesteps, tf.float32) * self.gains[name])
                                 for name, total in sums.items()}
        return result

    def run(self) -> dict:
        _, _, _, _, sums, features, counts, messages, rates, outside = tf.while_loop(
            lambda t, *_: t < self.timesteps, self.step, self.initial())
        return self.results(sums, features, counts, messages, rates, outside)

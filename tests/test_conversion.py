import numpy as np
import pytest
import tensorflow as tf

from snn4vision import layer_graph, models, neurons, simulation
from snn4vision.stages.convert import accuracy_over_time, timestep_grid
from snn4vision.evaluation import readout_steps
from snn4vision.errors import UserError

from .conftest import vgg_layers


@pytest.fixture(scope="module")
def ann():
    """A small VGG-16 with non-trivial BatchNorm statistics."""
    model = models.vgg16(5, image_size=32, width=0.125, batch_norm=True, seed=1)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([g * rng.uniform(0.5, 1.5, g.shape), b + rng.normal(0, 0.1, b.shape),
                               m + rng.normal(0, 0.1, m.shape), v * rng.uniform(0.5, 2, v.shape)])
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((6, 32, 32, 3)).astype(np.float32)


def test_folding_reproduces_ann_logits(ann, images):
    net = layer_graph.build_graph(ann)
    _, _, pool_after, _ = vgg_layers(net)
    assert len(net.neurons) == 13 and sum(pool_after) == 4
    assert not any(n.op == "batch_norm" for n in net.nodes)  # folded
    np.testing.assert_allclose(layer_graph.rate_forward(net, images).numpy(), ann(images).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_normalisation_keeps_logits_and_maps_percentile_to_max_rate(ann, images):
    net = layer_graph.build_graph(ann)
    percentiles = layer_graph.activation_percentiles(net, [images], percentile=99.0)
    normalised = layer_graph.normalise(net, percentiles, max_rate=500.0)
    logits, activations = layer_graph.rate_forward(normalised, images, return_activations=True)
    np.testing.assert_allclose(logits.numpy(), ann(images).numpy(), rtol=1e-4, atol=1e-5)
    for act in activations.values():
        assert np.percentile(act.numpy(), 99.0) == pytest.approx(500.0, rel=1e-3)


def test_every_unconvertible_layer_is_named_in_one_line():
    L = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same"), L.LeakyReLU(name="leaky"),
                                 L.Conv2D(4, 3, dilation_rate=2, name="dilated"), L.ReLU(max_value=6.0, name="relu6"),
                                 L.GlobalAveragePooling2D(), L.Dense(2, use_bias=False)])
    with pytest.raises(UserError) as error:
        layer_graph.build_graph(model)
    message = str(error.value)
    assert "\n" not in message
    assert "leaky: LeakyReLU has no converter" in message
    assert "dilated: dilation_rate=(2, 2) is not supported" in message
    assert "relu6: max_value=6 is not supported (supported: None)" in message


def _reference_simulation(kernels, biases, logits_kernel, pool_after, images, timesteps, dt, tau, seed):
    """keras-spiking's arithmetic written out in NumPy, one layer after another."""
    x = np.repeat(images[:, None], timesteps, axis=1)  # (batch, time, h, w, c)
    for i, (kernel, bias, pool) in enumerate(zip(kernels, biases, pool_after)):
        b, t = x.shape[:2]
        h = tf.nn.conv2d(x.reshape(b * t, *x.shape[2:]), kernel, 1, "SAME").numpy() + bias
        h = h.reshape(b, t, *h.shape[1:])
        v = tf.random.stateless_uniform(h[:, 0].shape, seed=(neurons.layer_seed(seed, i),) * 2).numpy()
        out = np.zeros_like(h)
        level = np.zeros_like(h[:, 0])
        a = np.exp(-dt / tau, dtype=np.float32) if tau else None
        for step in range(timesteps):
            v = v + np.maximum(h[:, step], 0) * np.float32(dt)
            n = np.floor(v)
            v = v - n
            spikes = n / np.float32(dt)
            level = (1 - a) * spikes + a * level if tau else spikes
            out[:, step] = level
        x = out
        if pool:
            x = x.reshape(b, t, x.shape[2] // 2, 2, x.shape[3] // 2, 2, x.shape[4]).mean(axis=(3, 5))
    return x.mean(axis=(2, 3)) @ logits_kernel


def _independently_normalised_weights(net, images, max_rate):
    """Data-based normalisation written out from the ANN's own activations, without the code's scaling.

    Layer l's ReLU output is divided by its 99.9th percentile p_l and multiplied by max_rate, so
    its kernel becomes W_l * (max_rate / p_l) / (max_rate / p_{l-1}) and its bias b_l * max_rate / p_l.
    """
    x, previous = images, 1.0
    kernels, biases = [], []
    net_kernels, net_biases, pool_after, logits_kernel = vgg_layers(net)
    for kernel, bias, pool in zip(net_kernels, net_biases, pool_after):
        act = np.maximum(tf.nn.conv2d(x, kernel, 1, "SAME").numpy() + bias, 0)
        gain = max_rate / np.percentile(act, 99.9)
        kernels.append(kernel * gain / previous)
        biases.append(bias * gain)
        previous = gain
        x = act.reshape(act.shape[0], act.shape[1] // 2, 2, act.shape[2] // 2, 2, -1).mean(axis=(2, 4)) if pool else act
    return kernels, biases, logits_kernel / previous


@pytest.mark.parametrize("tau", [0.005, None])
def test_simulator_matches_numpy_reference_and_keras_spiking(ann, images, tau):
    net = layer_graph.build_graph(ann)
    net = layer_graph.normalise(net, layer_graph.activation_percentiles(net, [images]), max_rate=1000.0)
    snn = simulation.SpikingNetwork.from_graph(net, timesteps=12, tau=tau, seed=3)
    ours = snn.simulate(images, 12)["logits"].numpy()
    reference = _reference_simulation(*_independently_normalised_weights(layer_graph.build_graph(ann), images, 1000.0),
                                      vgg_layers(net)[2], images, 12, 0.001, tau, 3)
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-3 * np.abs(reference).max())
    naive = simulation.keras_spiking_model(snn)(np.repeat(images[:, None], 12, axis=1), training=False).numpy()
    np.testing.assert_array_equal(ours, naive)


def test_spike_at_step_t_only_affects_later_steps(ann, images):
    net = layer_graph.build_graph(ann)
    net = layer_graph.normalise(net, layer_graph.activation_percentiles(net, [images]), max_rate=1000.0)
    snn = simulation.SpikingNetwork.from_graph(net, tau=0.01, seed=0)
    long = snn.simulate(images, 10)
    short = snn.simulate(images, 4)
    np.testing.assert_array_equal(long["logits"][:, :4].numpy(), short["logits"].numpy())
    np.testing.assert_array_equal(long["spikes"][:, :4].numpy(), short["spikes"].numpy())


def test_frames_are_presented_one_per_step(ann, images):
    """(batch, T, h, w, c) frames (event recordings): frame t drives step t; the same frame at every step is the
    static image's simulation."""
    net = layer_graph.build_graph(ann)
    net = layer_graph.normalise(net, layer_graph.activation_percentiles(net, [images]), max_rate=1000.0)
    snn = simulation.SpikingNetwork.from_graph(net, tau=0.01, seed=0)
    static = snn.simulate(images, 6)
    repeated = snn.simulate(np.repeat(images[:, None], 6, axis=1), 6)
    np.testing.assert_allclose(repeated["logits"].numpy(), static["logits"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(repeated["spikes"].numpy(), static["spikes"].numpy())
    # dark after step 2: the first three steps are the static image's, the first layer then falls silent
    dark = np.concatenate([np.repeat(images[:, None], 3, axis=1), np.zeros((6, 3, 32, 32, 3), np.float32)], axis=1)
    half = snn.simulate(dark, 6)
    np.testing.assert_array_equal(half["spikes"][:, :3].numpy(), static["spikes"][:, :3].numpy())
    assert half["spikes"][:, 3:, 0].numpy().sum() < static["spikes"][:, 3:, 0].numpy().sum() / 2
    with pytest.raises(UserError, match="the input holds 6 frames for 4 steps"):
        snn.simulate(dark, 4)


def test_straight_through_gradient_is_relu_gradient(ann, images):
    """Backward, each spiking layer is ReLU: a channel whose pre-activation is negative everywhere gets
    exactly zero gradient (an identity straight-through estimator would give it one), and one that is
    positive everywhere gets the gradient of its unclipped input."""
    net = layer_graph.build_graph(ann)
    net.linear[0].bias = net.linear[0].bias.copy()
    net.linear[0].bias[0], net.linear[0].bias[1] = -1e3, 1e3  # channel 0 always off, channel 1 always on
    snn = simulation.SpikingNetwork.from_graph(net, timesteps=3, tau=None, seed=0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(snn(images[:2], training=True))
    grads = dict(zip([v.name.split(":")[0].split("/")[-1] for v in snn.trainable_variables],
                     tape.gradient(loss, snn.trainable_variables)))
    assert np.isfinite(np.concatenate([g.numpy().ravel() for g in grads.values()])).all()
    assert grads["bias_0"].numpy()[0] == 0.0 and not np.any(grads["kernel_0"].numpy()[..., 0])
    assert grads["bias_0"].numpy()[1] != 0.0 and np.all(grads["kernel_0"].numpy()[..., 1] != 0)


def test_simulator_save_load_round_trip(tmp_path, ann, images):
    snn = simulation.SpikingNetwork.from_graph(layer_graph.build_graph(ann), timesteps=4, tau=0.01, seed=2)
    from snn4vision.checkpoints import load_variables, save_variables
    from snn4vision.errors import UserError

    save_variables(snn.weights, tmp_path / "snn.weights.h5")
    # trainability changes the order of Keras' weights; loading goes by name
    copy = simulation.SpikingNetwork.from_config(snn.get_config() | {"train_tau": False})
    load_variables(copy.weights, tmp_path / "snn.weights.h5")
    np.testing.assert_array_equal(copy(images).numpy(), snn(images).numpy())
    other = simulation.SpikingNetwork.from_graph(layer_graph.build_graph(models.vgg16(5, image_size=32, width=0.25)))
    with pytest.raises(UserError, match="kernel_0 of shape"):
        load_variables(other.weights, tmp_path / "snn.weights.h5")


def test_timestep_grid_and_readout():
    assert timestep_grid(32) == [1, 2, 4, 8, 16, 32]
    assert timestep_grid(12) == [1, 2, 4, 8, 12]
    assert [readout_steps(t, 0.5) for t in (1, 2, 3, 8)] == [1, 1, 2, 4]


def test_accuracy_over_time_by_hand():
    logits = np.zeros((2, 4, 3), np.float32)
    logits[0, :, 0] = [1, 1, 0, 0]  # image 0: class 0 early, class 1 late
    logits[0, :, 1] = [0, 0, 2, 2]
    logits[1, :, 2] = 1  # image 1: always class 2
    spikes = np.ones((2, 4, 2), np.float32)
    rows = accuracy_over_time({"logits": logits, "spikes": spikes}, np.array([1, 2]), [2, 4], 0.5, [10, 20], 0.001)
    assert [r["accuracy"] for r in rows] == [0.5, 1.0]
    assert rows[1]["accuracy_all_steps"] == 1.0 and rows[0]["accuracy_last_step"] == 0.5
    assert rows[1]["spikes_per_image"] == 8.0
    assert rows[1]["firing_rate_hz"] == pytest.approx([4 / 10 / 0.004, 4 / 20 / 0.004])


def test_tau_and_dt_train_through_the_synaptic_filters(ann, images):
    net = layer_graph.build_graph(ann)
    net = layer_graph.normalise(net, layer_graph.activation_percentiles(net, [images]), max_rate=1000.0)
    snn = simulation.SpikingNetwork.from_graph(net, timesteps=4, tau=0.003, train_dt=True, seed=0)
    assert snn.dt_weight.trainable and all(tau.trainable for tau in snn.taus)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(snn(images[:2], training=True) ** 2)
    dt_grad, tau_grad = tape.gradient(loss, [snn.dt_weight, snn.taus[-1]])
    assert dt_grad is not None and float(tf.abs(dt_grad)) > 0
    assert tau_grad is not None and float(tf.reduce_sum(tf.abs(tau_grad))) > 0
    frozen = simulation.SpikingNetwork.from_graph(net, timesteps=4, tau=0.003, train_tau=False, seed=0)
    assert not frozen.dt_weight.trainable and not any(tau.trainable for tau in frozen.taus)


def test_rate_l2_is_keras_spikings_ranged_l2_regulariser(ann, images):
    """Our per-neuron rate penalty equals keras-spiking's ``regularizers.L2(target=band)`` as SNN4Space puts it
    on every SpikingActivation (Keras divides activity regularisation by the batch size)."""
    import keras_spiking

    net = layer_graph.build_graph(ann)
    net = layer_graph.normalise(net, layer_graph.activation_percentiles(net, [images]), max_rate=1000.0)
    snn = simulation.SpikingNetwork.from_graph(net, timesteps=6, tau=0.005, seed=3, rate_band=(10.0, 20.0),
                                            rate_l2=1e-6)
    snn(images, training=True)
    ours = float(sum(snn.losses))
    naive = simulation.keras_spiking_model(snn)
    outputs = [layer.output for layer in naive.layers if isinstance(layer, keras_spiking.SpikingActivation)]
    spikes = tf.keras.Model(naive.inputs, outputs)(np.repeat(images[:, None], 6, axis=1), training=False)
    regulariser = keras_spiking.regularizers.L2(l2=1e-6, target=(10.0, 20.0))
    reference = sum(float(regulariser(s)) for s in spikes) / len(images)
    assert ours == pytest.approx(reference, rel=1e-4)
    # most neurons fire at 0 Hz or 1000 Hz in a step: both outside the band, so the penalty is large
    assert reference > 1e-6 * 10.0 ** 2 * snn.neurons_per_layer()[0]
    with pytest.raises(ValueError, match="rate_band"):
        simulation.SpikingNetwork.from_graph(net, rate_l2=1e-6)

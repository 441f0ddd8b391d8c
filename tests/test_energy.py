import numpy as np
import pytest

from snn4vision import costs, layer_graph, models, simulation
from snn4vision.errors import UserError

from .conftest import vgg_layers


def test_shipped_profiles():
    devices = costs.load_devices()
    assert {"cpu", "gpu", "arm", "loihi", "spinnaker", "spinnaker2", "45nm"} <= set(devices)
    assert devices["45nm"].mac == pytest.approx(4.6e-12) and devices["45nm"].energy_per_synop == pytest.approx(0.9e-12)
    assert devices["loihi"].spiking and not devices["gpu"].spiking
    assert devices["gpu"].mac == devices["gpu"].energy_per_synop


def test_bad_profile_is_named(tmp_path):
    (tmp_path / "x.toml").write_text('name = "x"\nspiking = true\n')
    with pytest.raises(UserError, match="x.toml is invalid"):
        costs.load_devices(tmp_path)
    with pytest.raises(UserError, match="no device profiles"):
        costs.load_devices(tmp_path / "empty")


def test_vgg16_macs_at_224_match_the_analytic_total():
    channels = [c for block in models.VGG16_BLOCKS for c in block]
    pool_after = [i in (1, 3, 6, 9) for i in range(13)]
    layers = costs.graph_costs(layer_graph.nodes_from_spec(layer_graph.vgg_graph_spec(channels, pool_after, 1000, 224)),
                               "logits")
    # Independent: the five blocks run at 224, 112, 56, 28 and 14 pixels.
    sizes = [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3
    c_in = [3] + channels[:-1]
    expected = sum(s * s * 9 * a * b for s, a, b in zip(sizes, c_in, channels))
    assert sum(c.connections for c in layers[:-1]) == expected == 15_346_630_656
    assert layers[-1].connections == 512 * 1000
    assert sum(c.neurons for c in layers) == sum(s * s * c for s, c in zip(sizes, channels))


def test_network_costs_by_hand():
    """A layer "a" reading the image (MACs once) feeds 5 neurons; "b" reads their 7 spikes (fan-out 12) after 8
    pooling adds and feeds 3 neurons; with a synapse every neuron takes two updates per step."""
    layers = [costs.LayerCost("a", connections=100, inputs=10, neurons=5, analog="once", feeds=(0,)),
              costs.LayerCost("b", connections=60, inputs=5, neurons=3, adds=8, sources=(0,), feeds=(1,))]
    records = costs.network_activity(layers, [("n0", 5), ("n1", 3)], [7.0, 2.0], timesteps=4, synapse=True)
    assert [r["name"] for r in records] == ["a", "n0", "b", "n1"]
    rows, ops, rates = costs.activity_costs(records, timesteps=4, dt=0.001)
    assert ops == [{"macs": 100.0, "sops": 0.0, "updates": 0.0, "dense_synops": 100.0},
                   {"macs": 0.0, "sops": 0.0, "updates": 40.0, "dense_synops": 0.0},
                   {"macs": 0.0, "sops": 7.0 * 12, "updates": 0.0, "dense_synops": 240.0,
                    "event_sops": 7.0 * 12, "payload_bits": 0.0},  # one message per spike by default
                   {"macs": 0.0, "sops": 0.0, "updates": 24.0, "dense_synops": 0.0}]
    assert rates == [None, pytest.approx(7 / 5 / 4 / 0.001), None, pytest.approx(2 / 3 / 4 / 0.001)]
    loihi = costs.Device("l", True, energy_per_synop=2.0, energy_per_neuron=1.0, energy_per_mac=3.0)
    gpu = costs.Device("g", False, energy_per_synop=2.0, energy_per_neuron=1.0)
    assert costs.snn_energy(ops, loihi) == [300, 40, 2 * 84, 24]
    assert costs.snn_energy(ops, gpu) == [200, 40, 480, 24]
    # The ANN's MACs cost energy_per_mac (3), its pooling additions energy_per_synop (2): a device
    # whose two energies differ tells them apart.
    assert costs.ann_energy(rows, loihi) == [100 * 3, 5, 60 * 3 + 8 * 2, 3]
    assert costs.ann_energy(rows, gpu) == [200, 5, 120 + 16, 3]
    table = costs.energy_table(rows, ops, rates, {"g": gpu})
    assert table[-1]["sop_per_mac"] == (100 + 84) / 160  # the first layer's MACs count
    assert table[-1]["ann_J_g"] == 200 + 5 + 136 + 3 and table[-1]["snn_J_g"] == 200 + 40 + 480 + 24
    assert costs.sop_weights(layers, [5, 3]) == [5 * (60 / 5) / 160, 0.0]  # 5 neurons, each spike reaching 12
    # a layer after a residual add receives both layers' spikes; one reading analog values computes every step
    merged = costs.LayerCost("c", connections=30, inputs=3, neurons=0, sources=(0, 1))
    analog = costs.LayerCost("d", connections=20, inputs=4, neurons=0, analog="every_step")
    records = costs.network_activity([merged, analog], [("n0", 5), ("n1", 3)], [7.0, 2.0], 4, synapse=False)
    _, ops, _ = costs.activity_costs(records, timesteps=4)
    assert ops == [{"macs": 0.0, "sops": 9.0 * 10, "updates": 0.0, "dense_synops": 120.0, "event_sops": 90.0,
                    "payload_bits": 0.0},
                   {"macs": 80.0, "sops": 0.0, "updates": 0.0, "dense_synops": 80.0}]
    assert costs.sop_weights([merged, analog], [5, 3]) == [5 * 10 / 50, 3 * 10 / 50]


@pytest.mark.slow  # keras-spiking's own simulation: about 5 s
def test_synops_agree_with_keras_spiking_model_energy():
    """Cross-check with keras-spiking's ModelEnergy on the same network, spikes and seeds.

    keras-spiking charges a conv the mean rate of its input times its connections. That
    equals our spikes x fan-out, except where it reads a pooled map (it counts the pooled
    values as events: ours is 4x, one SOP per presynaptic spike per synapse of the folded
    kernel) and at the logits (it counts the GAP output: ours is H*W x, one SOP per spike).
    """
    import keras_spiking

    ann = models.vgg16(4, image_size=32, width=0.125, seed=3)
    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    net = layer_graph.build_graph(ann)
    net = layer_graph.normalise(net, layer_graph.activation_percentiles(net, [images]), max_rate=500.0)
    timesteps, dt = 6, 0.001
    snn = simulation.SpikingNetwork.from_graph(net, timesteps=timesteps, tau=None, seed=1)
    spikes = snn.simulate(images, timesteps)["spikes"].numpy().sum(axis=1).mean(axis=0)
    rows, operations, _ = costs.activity_costs(snn.activity(spikes, timesteps), timesteps)
    ours = {row.name: ops for row, ops in zip(rows, operations)}
    pool_after = vgg_layers(net)[2]
    naive = simulation.keras_spiking_model(snn, timesteps)
    stats = keras_spiking.ModelEnergy(naive, example_data=np.repeat(images[:, None], timesteps, axis=1))
    loihi = costs.load_devices()["loihi"]
    convs = [naive.get_layer(node.name) for node in snn.nodes if node.op == "conv"]
    for i, layer in enumerate(convs[1:], start=1):
        synop_energy, _ = stats.layer_energy(layer, "loihi", timesteps_per_inference=timesteps, dt=dt)
        theirs = synop_energy / loihi.energy_per_synop
        factor = 4 if pool_after[i - 1] else 1
        assert ours[layer.name]["sops"] == pytest.approx(factor * theirs, rel=1e-4)
    synop_energy, _ = stats.layer_energy(naive.get_layer("logits"), "loihi", timesteps_per_inference=timesteps, dt=dt)
    assert ours["logits"]["sops"] == pytest.approx(2 * 2 * synop_energy / loihi.energy_per_synop, rel=1e-4)


@pytest.mark.install
def test_profiles_are_found_by_a_non_editable_install(tmp_path):
    """The profiles of the top-level energy/ ship as package data of snn4vision.profiles, and the subpackages as
    packages: an installed copy (not this checkout) finds all nine profiles, with their README, and imports every
    subpackage (a find that kept only snn4vision, or a profiles package left unmapped, would lose them)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    # built from a copy of the sources: a build/ folder left in the checkout would hand on stale files
    source = tmp_path / "source"
    for folder in ("snn4vision", "energy"):  # energy/: the profiles, mapped into the package by setup.py
        shutil.copytree(root / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    subpackages = sorted(p.parent.name for p in (root / "snn4vision").glob("*/__init__.py"))
    assert {"events", "rundir", "ops"} <= set(subpackages)
    probe = ("import importlib, snn4vision, snn4vision.costs as e, snn4vision.devices as d; "
             "print(snn4vision.__file__); print(' '.join(sorted(e.load_devices()))); "
             "print(str(d.ENERGY_DIR.joinpath('README.md')), d.ENERGY_DIR.joinpath('README.md').is_file()); "
             f"print(all(importlib.import_module('snn4vision.' + m).__file__.startswith({str(target)!r}) "
             f"for m in {subpackages!r}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert out[1] == "45nm 45nm_int8 arm cpu gpu loihi loihi2 spinnaker spinnaker2"
    assert out[2] == f"{target}/snn4vision/profiles/README.md True"
    assert out[-1] == "True"


@pytest.mark.parametrize("pooling", ["after", "before", "requantised"])
def test_sparsity_penalty_is_the_expected_sop_per_mac_by_hand(pooling):
    """QCFS layers: strength x sum over layers of (spikes per neuron at T = L) x neurons x fan-out of the next
    layer / the ANN's MACs, counted here from the architecture by hand; nothing during the ReLU warm-up.
    Pooled before their activation, the last layers of blocks 1-4 have a quarter of the neurons. Requantised
    (a QCFS of 8 levels after each pooling), their spikes reach one pooled neuron each (one synapse, counted
    as a MAC in the ANN), and the pooled neurons reach the next conv."""
    import tensorflow as tf

    from snn4vision.stages.training import add_sparsity_penalty, qcfs_layers

    model = models.vgg16(4, image_size=32, width=0.125, batch_norm=True, kernel_l2=0, bias_l1=0, seed=0,
                         activation="qcfs", levels=4, pool_before_activation=pooling == "before",
                         pool_levels=8 if pooling == "requantised" else 0)
    add_sparsity_penalty(model, 2.0)
    channels = [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    conv_sizes = [32] * 2 + [16] * 2 + [8] * 3 + [4] * 3 + [2] * 3
    sizes = [s // 2 if pooling == "before" and i in (1, 3, 6, 9) else s for i, s in enumerate(conv_sizes)]
    c_in = [3] + channels[:-1]
    macs = sum(s * s * 9 * a * b for s, a, b in zip(conv_sizes, c_in, channels)) + 64 * 4
    fan_out = [9 * c for c in channels[1:]] + [4]  # a spike reaches 3x3 x C_next synapses; the last, 4 logits
    levels = [4] * 13
    if pooling == "requantised":  # (size, channels, fan-out, levels) of each layer, the pooled ones inserted
        macs += sum(conv_sizes[i] ** 2 * channels[i] for i in (1, 3, 6, 9))
        rows = []
        for i in range(13):
            pooled = i in (1, 3, 6, 9)
            rows.append((sizes[i], channels[i], 1 if pooled else fan_out[i], 4))
            if pooled:
                rows.append((sizes[i] // 2, channels[i], fan_out[i], 8))
        sizes, channels, fan_out, levels = (list(column) for column in zip(*rows))
    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    layers = qcfs_layers(model)
    assert [layer.levels for layer in layers] == levels
    probe = tf.keras.Model(model.inputs, [layer.output for layer in layers])
    outputs = probe(images, training=True)
    expected = 2.0 * sum(float(tf.reduce_mean(y)) * n / float(layer.threshold) * s * s * c * f / macs
                         for y, layer, s, c, f, n in zip(outputs, layers, sizes, channels, fan_out, levels))
    model(images, training=True)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)
    for layer in layers:  # ReLU warm-up: the batch's largest activation stands in for lambda
        layer.quantising.assign(0.0)
    outputs = probe(images, training=True)
    expected = 2.0 * sum(float(tf.reduce_mean(y)) * n / float(tf.reduce_max(y)) * s * s * c * f / macs
                         for y, s, c, f, n in zip(outputs, sizes, channels, fan_out, levels))
    model(images, training=True)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("neuron", ["signed_if", "keras_spiking"])
def test_fine_tuning_sparsity_penalty_is_the_measured_sop_per_mac(neuron):
    """In training, SpikingNetwork adds sparsity x (SOPs the measured spikes cause) / (ANN MACs): the same number
    the energy path gets from the integer spike counts, and it has a gradient."""
    import tensorflow as tf

    ann = models.vgg16(4, image_size=32, width=0.125, seed=3, activation="qcfs" if neuron == "signed_if" else "relu",
                       levels=4)
    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    net = layer_graph.build_graph(ann)
    if neuron == "keras_spiking":
        net = layer_graph.normalise(net, layer_graph.activation_percentiles(net, [images]), max_rate=500.0)
    snn = simulation.SpikingNetwork.from_graph(net, timesteps=4, tau=None, neuron=neuron, sparsity=3.0, seed=1)
    with tf.GradientTape() as tape:
        snn(images, training=True)
        penalty = tf.add_n(snn.losses)
    spikes = snn.simulate(images, 4)["spikes"].numpy().sum(axis=1).mean(axis=0)
    layers, operations, _ = costs.activity_costs(snn.activity(spikes, 4), 4)
    expected = 3.0 * sum(o["sops"] for o in operations) / sum(c.connections for c in layers)
    assert expected > 0 and float(penalty) == pytest.approx(expected, rel=1e-4)
    gradient = tape.gradient(penalty, snn.kernels["block1_conv2"])  # (untrained: deeper layers are silent)
    assert gradient is not None and np.abs(gradient.numpy()).sum() > 0

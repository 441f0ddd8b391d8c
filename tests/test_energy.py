import numpy as np
import pytest

from snn4vision import conversion, energy, models, simulation
from snn4vision.errors import UserError


def test_shipped_profiles():
    devices = energy.load_devices()
    assert {"cpu", "gpu", "arm", "loihi", "spinnaker", "spinnaker2", "45nm"} <= set(devices)
    assert devices["45nm"].mac == pytest.approx(4.6e-12) and devices["45nm"].energy_per_synop == pytest.approx(0.9e-12)
    assert devices["loihi"].spiking and not devices["gpu"].spiking
    assert devices["gpu"].mac == devices["gpu"].energy_per_synop


def test_bad_profile_is_named(tmp_path):
    (tmp_path / "x.toml").write_text('name = "x"\nspiking = true\n')
    with pytest.raises(UserError, match="x.toml is invalid"):
        energy.load_devices(tmp_path)
    with pytest.raises(UserError, match="no device profiles"):
        energy.load_devices(tmp_path / "empty")


def test_vgg16_macs_at_224_match_the_analytic_total():
    channels = [c for block in models.VGG16_BLOCKS for c in block]
    pool_after = [i in (1, 3, 6, 9) for i in range(13)]
    costs = energy.vgg_layer_costs(channels, pool_after, 224, 1000)
    # Independent: the five blocks run at 224, 112, 56, 28 and 14 pixels.
    sizes = [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3
    c_in = [3] + channels[:-1]
    expected = sum(s * s * 9 * a * b for s, a, b in zip(sizes, c_in, channels))
    assert sum(c.connections for c in costs[:-1]) == expected == 15_346_630_656
    assert costs[-1].connections == 512 * 1000
    assert sum(c.neurons for c in costs) == sum(s * s * c for s, c in zip(sizes, channels))


def test_snn_operations_by_hand():
    costs = [energy.LayerCost("a", connections=100, inputs=10, neurons=5),
             energy.LayerCost("b", connections=60, inputs=5, neurons=3, adds=8)]
    ops = energy.snn_operations(costs, spikes_per_layer=[7.0, 2.0], timesteps=4, synapse=True)
    assert ops[0] == {"macs": 100.0, "sops": 0.0, "updates": 40.0, "dense_synops": 100.0}
    assert ops[1] == {"macs": 0.0, "sops": 7.0 * 12, "updates": 24.0, "dense_synops": 240.0}
    loihi = energy.Device("l", True, energy_per_synop=2.0, energy_per_neuron=1.0, energy_per_mac=3.0)
    gpu = energy.Device("g", False, energy_per_synop=2.0, energy_per_neuron=1.0)
    assert energy.snn_energy(ops, loihi) == [300 + 40, 2 * 84 + 24]
    assert energy.snn_energy(ops, gpu) == [200 + 40, 480 + 24]
    # The ANN's MACs cost energy_per_mac (3), its pooling additions energy_per_synop (2): a device
    # whose two energies differ tells them apart.
    assert energy.ann_energy(costs, loihi) == [100 * 3 + 5, 60 * 3 + 8 * 2 + 3]
    assert energy.ann_energy(costs, gpu) == [200 + 5, 120 + 16 + 3]


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
    net = conversion.fold_ann(ann)
    net = conversion.normalise(net, conversion.activation_percentiles(net, [images]), max_rate=500.0)
    timesteps, dt = 6, 0.001
    snn = simulation.SpikingVGG.from_folded(net, 32, timesteps=timesteps, tau=None, seed=1)
    spikes = snn.simulate(images, timesteps)["spikes"].numpy().sum(axis=1).mean(axis=0)
    ours = energy.snn_operations(energy.vgg_layer_costs(snn.channels, snn.pool_after, 32, 4), spikes, timesteps, False)
    naive = simulation.keras_spiking_model(snn, timesteps)
    stats = keras_spiking.ModelEnergy(naive, example_data=np.repeat(images[:, None], timesteps, axis=1))
    loihi = energy.load_devices()["loihi"]
    convs = [layer for layer in naive.layers if layer.name.startswith("conv_")]
    for i, layer in enumerate(convs[1:], start=1):
        synop_energy, _ = stats.layer_energy(layer, "loihi", timesteps_per_inference=timesteps, dt=dt)
        theirs = synop_energy / loihi.energy_per_synop
        factor = 4 if snn.pool_after[i - 1] else 1
        assert ours[i]["sops"] == pytest.approx(factor * theirs, rel=1e-4)
    synop_energy, _ = stats.layer_energy(naive.get_layer("logits"), "loihi", timesteps_per_inference=timesteps, dt=dt)
    assert ours[-1]["sops"] == pytest.approx(2 * 2 * synop_energy / loihi.energy_per_synop, rel=1e-4)


def test_profiles_are_found_by_a_non_editable_install(tmp_path):
    """The profiles ship as package data: an installed copy (not this checkout) finds all seven."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(root)], check=True, capture_output=True)
    probe = ("import snn4vision, snn4vision.energy as e; print(snn4vision.__file__); "
             "print(' '.join(sorted(e.load_devices())))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert out[1] == "45nm arm cpu gpu loihi spinnaker spinnaker2"

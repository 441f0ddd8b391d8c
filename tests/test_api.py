"""The Python API (snn4vision.api) against independent expectations: the four calls it wraps, QCFS's exactness,
hand-counted MACs and spikes, NIR read back, and one clear line for each bad argument."""
import importlib.util
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import snn4vision
from snn4vision import layer_graph
from snn4vision.layers import QCFS
from snn4vision.simulation import SpikingNetwork

import tensorflow as tf

L = tf.keras.layers
ROOT = Path(__file__).resolve().parents[1]


def relu_model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((12, 12, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = L.AveragePooling2D()(x)
    x = L.Conv2D(8, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, L.Dense(4)(x))


def qcfs_model(levels=4, threshold=1.0):
    """conv 3x3 (8x8x1 -> 6x6x2) -> QCFS -> flatten (72) -> dense 3: 648 + 216 MACs, 72 neurons."""
    tf.keras.utils.set_random_seed(1)
    inputs = tf.keras.Input((8, 8, 1))
    x = L.Conv2D(2, 3, name="conv")(inputs)
    x = QCFS(levels, threshold, name="qcfs")(x)
    x = L.Flatten()(x)
    return tf.keras.Model(inputs, L.Dense(3, name="logits")(x))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((40, 12, 12, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def small_images():
    return np.random.default_rng(1).random((24, 8, 8, 1)).astype(np.float32)


def test_convert_is_the_four_calls_with_the_options_given(images):
    model = relu_model()
    snn = snn4vision.convert(model, images, timesteps=8, percentile=99.0, max_rate=400.0, tau=0.01, seed=3,
                             calibration_images=30)
    graph = layer_graph.build_graph(model)
    percentiles = layer_graph.activation_percentiles(graph, [images[:30]], 99.0, seed=3)
    graph = layer_graph.normalise(graph, percentiles, 400.0)
    reference = SpikingNetwork.from_graph(graph, timesteps=8, dt=0.001, tau=0.01, seed=3)
    ours, theirs = snn.simulate(images, 8), reference.simulate(images, 8)
    np.testing.assert_array_equal(ours["logits"].numpy(), theirs["logits"].numpy())
    np.testing.assert_array_equal(ours["spikes"].numpy(), theirs["spikes"].numpy())
    # the prediction is the mean logit over the last half of the steps (ReLU: the synapses settle first)
    assert snn.readout_steps == 4
    np.testing.assert_allclose(snn(images).numpy(), ours["logits"].numpy()[:, -4:].mean(axis=1), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.slow  # a training: about 5 s
def test_a_qcfs_model_converts_to_the_stage_policy_and_reproduces_the_ann(small_images):
    model = qcfs_model()
    snn = snn4vision.convert(model, timesteps=4)  # no calibration: thresholds come from the ANN
    assert (snn.neuron, snn.tau, snn.max_spikes, snn.readout_steps) == ("signed_if", None, 4, 4)
    plain = snn4vision.convert(model, timesteps=4, neuron="if")
    assert (plain.neuron, plain.max_spikes) == ("if", 1)
    ann = model.predict(small_images, verbose=0)
    for network in (snn, plain):  # QCFS: at T = L the SNN computes the ANN
        np.testing.assert_allclose(network.simulate(small_images, 4)["logits"].numpy().mean(axis=1), ann,
                                   rtol=1e-4, atol=1e-4)
    predictions = ann.argmax(axis=1)
    result = snn.evaluate(small_images, predictions)
    assert result["accuracy"] == 1.0 and result["timesteps"] == 4 and result["images"] == 24
    assert snn.evaluate(small_images, (predictions + 1) % 3)["accuracy"] == 0.0


def expected_spikes(model, images, levels=4, threshold=1.0):
    """Spikes per image of the QCFS layer's IF neurons at T = L: L * y / lambda per neuron (QCFS's definition)."""
    qcfs = tf.keras.Model(model.inputs, model.get_layer("qcfs").output)(images).numpy()
    return float((qcfs * levels / threshold).reshape(len(images), -1).sum(axis=1).mean())


def test_evaluate_counts_spikes_and_firing_rates_by_hand(small_images):
    model = qcfs_model()
    snn = snn4vision.convert(model, timesteps=4, neuron="if", dt=0.002)
    result = snn.evaluate(small_images, np.zeros(24, int))
    spikes = expected_spikes(model, small_images)
    assert result["spikes_per_image"] == pytest.approx(spikes, rel=1e-3)
    assert result["firing_rate_hz"] == pytest.approx([spikes / 72 / (4 * 0.002)], rel=1e-3)


def write_profiles(folder: Path) -> Path:
    folder.mkdir()
    (folder / "chip.toml").write_text('name = "chip"\nspiking = true\nenergy_per_synop = 2e-12\n'
                                      'energy_per_neuron = 3e-12\nenergy_per_mac = 5e-12\n')
    (folder / "cpu.toml").write_text('name = "cpu"\nspiking = false\nenergy_per_synop = 7e-12\n'
                                     'energy_per_neuron = 1e-12\n')
    return folder


def test_estimate_energy_of_a_hand_sized_net_is_hand_counted_macs_and_spikes(tmp_path, small_images):
    model = qcfs_model()
    snn = snn4vision.convert(model, timesteps=4, neuron="if")
    estimate = snn4vision.estimate_energy(snn, small_images, profiles=write_profiles(tmp_path / "profiles"))
    spikes = expected_spikes(model, small_images)
    conv, dense, neurons, steps = 6 * 6 * 2 * 9, 72 * 3, 72, 4
    assert set(estimate) == {"chip", "cpu"} and estimate.timesteps == 4 and estimate.images == 24
    assert estimate.spikes_per_image == pytest.approx(spikes, rel=1e-3)
    chip, cpu = estimate["chip"], estimate["cpu"]
    # ANN: every synapse a MAC, every ReLU one update
    assert chip["ann_J"] == pytest.approx((conv + dense) * 5e-12 + neurons * 3e-12)
    assert cpu["ann_J"] == pytest.approx((conv + dense) * 7e-12 + neurons * 1e-12)
    # SNN, spiking device: the image's conv once as MACs, a SOP per spike and synapse (fan-out 3), updates per step
    assert chip["snn_J"] == pytest.approx(conv * 5e-12 + spikes * 3 * 2e-12 + neurons * steps * 3e-12, rel=1e-3)
    # SNN, non-spiking device: the dense layer every step
    assert cpu["snn_J"] == pytest.approx(conv * 7e-12 + dense * steps * 7e-12 + neurons * steps * 1e-12)
    assert chip["snn_over_ann"] == pytest.approx(chip["snn_J"] / chip["ann_J"])
    assert estimate.sop_per_mac == pytest.approx((conv + spikes * 3) / (conv + dense), rel=1e-3)
    assert "chip" in str(estimate) and "SNN/ANN" in str(estimate)


def test_a_graded_device_pays_one_message_per_burst_as_the_energy_stage_does(tmp_path, small_images):
    """At T = 1 each QCFS neuron fires its level in one burst: a binary device pays a SOP per spike and synapse,
    a graded one (Loihi 2's kind) one per message, i.e. per neuron whose level is above 0 (fan-out 3)."""
    folder = write_profiles(tmp_path / "profiles")
    common = 'spiking = true\nenergy_per_synop = 2e-12\nenergy_per_neuron = 3e-12\nenergy_per_mac = 5e-12\n'
    (folder / "graded.toml").write_text('name = "graded"\ngraded = true\n' + common)
    model = qcfs_model()
    snn = snn4vision.convert(model, timesteps=1)
    estimate = snn4vision.estimate_energy(snn, small_images, devices=["chip", "graded"], profiles=folder)
    qcfs = tf.keras.Model(model.inputs, model.get_layer("qcfs").output)(small_images).numpy()
    spikes = float(np.round(qcfs * 4).reshape(24, -1).sum(axis=1).mean())
    messages = float((np.round(qcfs * 4) > 0).reshape(24, -1).sum(axis=1).mean())
    assert messages < spikes  # bursts of more than one spike happen
    conv, neurons = 6 * 6 * 2 * 9, 72
    assert estimate["chip"]["snn_J"] == pytest.approx(conv * 5e-12 + spikes * 3 * 2e-12 + neurons * 3e-12, rel=1e-3)
    assert estimate["graded"]["snn_J"] == pytest.approx(conv * 5e-12 + messages * 3 * 2e-12 + neurons * 3e-12,
                                                        rel=1e-3)
    assert estimate.fair_baseline is None  # no 45nm_int8 profile in that folder
    assert estimate.memory_aware["chip"]["snn_J"] > 0


def test_estimate_energy_prices_the_memory_aware_model_and_the_fair_baseline(small_images):
    snn = snn4vision.convert(qcfs_model(), timesteps=1)
    estimate = snn4vision.estimate_energy(snn, small_images, devices=["loihi", "gpu"])
    fair = estimate.fair_baseline
    assert fair["device"] == "45nm_int8" and 0 < fair["compute_only_J"] < fair["memory_aware_J"]
    loihi = estimate.memory_aware["loihi"]
    assert loihi["snn_over_fair_ann"] == pytest.approx(loihi["snn_J"] / fair["memory_aware_J"])
    assert estimate["loihi"]["snn_over_fair_ann"] == pytest.approx(estimate["loihi"]["snn_J"] / fair["compute_only_J"])
    assert estimate["gpu"]["snn_over_fair_ann"] is None  # a dense run on a GPU makes no SNN claim
    assert "memory-aware" in str(estimate) and "fair baseline" in str(estimate)


def test_estimate_energy_converts_a_keras_model_and_runs_the_timesteps_asked(tmp_path, images):
    """A Keras model is converted on the images (keras-spiking neurons and synapses: two updates per neuron and
    step); ``timesteps`` overrides the SNN's. One batch: keras-spiking's initial voltages depend on the batch."""
    profiles = write_profiles(tmp_path / "profiles")
    estimate = snn4vision.estimate_energy(relu_model(), images, devices="cpu", profiles=profiles, timesteps=3,
                                          calibration=images[:20], batch_size=40)
    snn = snn4vision.convert(relu_model(), images[:20])
    neurons = sum(snn.neurons_per_layer())
    conv1 = 12 * 12 * 6 * 27
    conv2 = 6 * 6 * 8 * 9 * 6
    dense = 8 * 4
    assert list(estimate) == ["cpu"] and estimate.timesteps == 3
    assert estimate["cpu"]["snn_J"] == pytest.approx(
        conv1 * 7e-12 + (conv2 + dense) * 3 * 7e-12 + neurons * 3 * 2 * 1e-12)
    spikes = snn.simulate(images, 3)["spikes"].numpy().sum(axis=(1, 2)).mean()
    assert estimate.spikes_per_image == pytest.approx(float(spikes), rel=1e-5)


def test_export_nir_writes_what_nir_reads_back(tmp_path, small_images):
    import nir

    model = qcfs_model()
    snn = snn4vision.convert(model, timesteps=4)
    with pytest.raises(snn4vision.UserError, match="pass approximate=True") as error:
        snn.export_nir(tmp_path / "signed.nir")
    assert "\n" not in str(error.value) and not (tmp_path / "signed.nir").exists()
    snn.export_nir(tmp_path / "model.nir", approximate=True)
    graph = nir.read(tmp_path / "model.nir")
    kinds = sorted(type(node).__name__ for node in graph.nodes.values())
    assert kinds.count("IF") == 1 and kinds.count("Conv2d") == 1
    conv = next(node for node in graph.nodes.values() if type(node).__name__ == "Conv2d")
    # Keras (kh, kw, in, out) is NIR (out, in, kh, kw); the image's conv is not rescaled
    np.testing.assert_allclose(conv.weight, model.get_layer("conv").kernel.numpy().transpose(3, 2, 0, 1), rtol=1e-6)
    plain = snn4vision.convert(model, timesteps=4, neuron="if")
    snn4vision.export_nir(plain, tmp_path / "plain.nir")
    assert sorted(nir.read(tmp_path / "plain.nir").nodes) == sorted(graph.nodes)


def test_the_api_names_stay_functions_once_every_stage_has_loaded():
    """The stages live in snn4vision.stages, so no module of the package takes an API function's name."""
    import snn4vision.cli  # noqa: F401  (every stage)
    from snn4vision import api

    assert snn4vision.convert is api.convert and callable(snn4vision.convert)
    assert snn4vision.estimate_energy is api.estimate_energy and snn4vision.export_nir is api.export_nir
    assert sys.modules["snn4vision.stages.convert"].build_snn
    assert [name for name in snn4vision.API if importlib.util.find_spec(f"snn4vision.{name}")] == []


@pytest.mark.slow  # a training: about 4 s
def test_keras_evaluate_still_runs_with_its_own_keywords(small_images):
    snn = snn4vision.convert(qcfs_model(), timesteps=4)
    snn.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    loss, accuracy = snn.evaluate(small_images, np.zeros(24, int), verbose=0)
    assert math.isfinite(loss) and 0 <= accuracy <= 1
    by_name = snn.evaluate(x=small_images, y=np.zeros(24, int), verbose=0, return_dict=True)  # as fit validates
    assert by_name == pytest.approx({"loss": loss, "accuracy": accuracy})


BAD_OPTIONS = [
    (dict(timestep=8), "unknown conversion option 'timestep': did you mean 'timesteps'?"),
    (dict(timesteps=0), "timesteps must be a whole number, 1 or more, got 0"),
    (dict(timesteps=2.5), "timesteps must be a whole number"),
    (dict(timesteps=10 ** 6), "above the largest supported T"),
    (dict(dt=-1), "dt must be a number of seconds between"),
    (dict(tau=-0.1), "tau must be a positive number of seconds"),
    (dict(percentile=0), "percentile must be in (0, 100]"),
    (dict(max_rate=0), "max_rate must be a positive number of Hz"),
    (dict(neuron="izhikevich"), "neuron must be 'auto' or one of"),
    (dict(neuron="if"), "if neurons need a QCFS ANN"),
    (dict(max_spikes=4), "max_spikes (bursts) is for a QCFS ANN"),
    (dict(readout_fraction=1.5), "readout_fraction must be in (0, 1]"),
    (dict(calibration_images=0), "calibration_images must be a whole number"),
    (dict(normalise="yes"), "normalise must be True or False"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[next(iter(o)) + "-" + str(i)
                                                               for i, (o, _) in enumerate(BAD_OPTIONS)])
def test_a_bad_option_is_one_clear_line(options, message, images):
    with pytest.raises(snn4vision.UserError) as error:
        snn4vision.convert(relu_model(), images, **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_models_inputs_and_labels_are_one_clear_line(images, small_images):
    cases = [
        (lambda: snn4vision.convert("model.h5", images), "model must be a tf.keras Model"),
        (lambda: snn4vision.convert(relu_model()), "pass some training images as calibration"),
        (lambda: snn4vision.convert(relu_model(), images[:, :8]), "calibration images have shape (40, 8, 12, 3)"),
        (lambda: snn4vision.convert(qcfs_model(), tau=0.1), "take no synapse"),
        (lambda: snn4vision.convert(qcfs_model(), neuron="keras_spiking"), "converts to integrate-and-fire"),
        (lambda: snn4vision.convert(qcfs_model(), neuron="if", max_spikes=2), "needs signed_if neurons"),
        (lambda: snn4vision.estimate_energy(qcfs_model(), small_images, devices=["tpu"]), "unknown device(s) tpu"),
        (lambda: snn4vision.estimate_energy(snn4vision.convert(qcfs_model()), small_images, dt=0.1),
         "conversion options (dt) apply to a Keras model"),
        (lambda: snn4vision.convert(qcfs_model()).evaluate(small_images, [0, 1]), "labels have shape (2,) for 24"),
        (lambda: snn4vision.convert(qcfs_model()).evaluate(small_images, np.full(24, 3)), "the network has 3 classes"),
        (lambda: snn4vision.convert(qcfs_model()).evaluate(small_images * np.nan, np.zeros(24, int)),
         "NaN or infinite"),
        (lambda: snn4vision.convert(qcfs_model()).evaluate(small_images, np.zeros(24, int), timesteps=0),
         "timesteps must be a whole number"),
    ]
    for call, message in cases:
        with pytest.raises(snn4vision.UserError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value), message


@pytest.mark.slow
def test_the_quickstart_runs_on_real_images(ucmerced, tmp_path, monkeypatch, capsys):
    """examples/quickstart.py, in process (no fresh TensorFlow), on a few real images for one epoch."""
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "--data", str(ucmerced), "--images-per-class", "12",
                                      "--epochs", "1", "--qcfs", "--nir", str(tmp_path / "q.nir")])
    namespace = runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="quickstart")
    result = namespace["main"]()
    out = capsys.readouterr().out
    assert 0 <= result["snn"]["accuracy"] <= 1 and result["snn"]["images"] == 12 and result["snn"]["timesteps"] == 4
    assert set(result["energy"]) == {"loihi", "spinnaker2", "gpu"}
    assert all(d["ann_J"] > 0 and d["snn_J"] > 0 for d in result["energy"].values())
    assert "SNN accuracy" in out and "SNN/ANN" in out and (tmp_path / "q.nir").stat().st_size > 0

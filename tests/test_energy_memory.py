"""The memory-aware energy model, the fair quantised baseline and graded spikes (issue 29): hand counts, the
published SRAM law of Lemaire et al. (ICONIP 2022) from Horowitz's (ISSCC 2014) figures, and bad profiles."""
import math

import numpy as np
import pytest

from snn4vision import costs, layer_graph, memory_costs, models, pipeline, report_pages, simulation
from snn4vision.stages import energy
from snn4vision.errors import UserError

# A device whose SRAM access costs 1 J per bit of word, whatever the memory's size: hand counts stay small.
UNIT = dict(spiking=True, energy_per_synop=2.0, energy_per_neuron=1.0, energy_per_mac=3.0,
            sram_energy_per_bit=0.0, sram_energy_fixed=64.0, sram_access_bits=64, weight_bits=8,
            accumulator_bits=16, activation_bits=4, energy_per_address_op=1.0, energy_per_event=10.0,
            ann_output_tile=5, ann_channel_tile=2)


def _records(**kw):
    """'a' reads the image (100 MACs, 20 weights, 5 outputs) and feeds n0 (5 neurons, 7 spikes in 4 bursts);
    'b' reads n0's spikes (fan-out 12) after 8 pooling adds and feeds n1 (3 neurons, 2 spikes in 1 burst)."""
    layers = [costs.LayerCost("a", 100, 10, 5, analog="once", feeds=(0,), weights=20, kernel=4, positions=5,
                              channels=1),
              costs.LayerCost("b", 60, 5, 3, adds=8, sources=(0,), feeds=(1,), weights=20, kernel=1, positions=3,
                              channels=1)]
    return costs.network_activity(layers, [("n0", 5), ("n1", 3)], [7.0, 2.0], 4, False, [4.0, 1.0], 3, **kw)


def test_lemaire_sram_law_is_the_fit_of_horowitz_sram_figures():
    """Published figure: Lemaire et al. price an SRAM access at 1.09e-5 pJ per bit of capacity + 13.2 pJ, their
    line through Horowitz's 64-bit reads of 8 kB (10 pJ), 32 kB (20 pJ) and 1 MB (100 pJ). Our fit of the same
    points gives their constants, and the 45 nm profiles carry them."""
    slope, fixed = memory_costs.fit_sram_law([(8e3 * 8, 10e-12), (32e3 * 8, 20e-12), (1e6 * 8, 100e-12)])
    assert slope == pytest.approx(1.09e-17, rel=0.01) and fixed == pytest.approx(13.2e-12, rel=0.01)
    for name in ("45nm", "45nm_int8"):
        device = costs.load_devices()[name]
        assert (device.sram_energy_per_bit, device.sram_energy_fixed, device.sram_access_bits) == \
            (pytest.approx(1.09e-17), pytest.approx(13.2e-12), 64)
        # a 64-bit read of 1 MB comes back to Horowitz's 100 pJ (the line's largest point dominates the fit)
        assert memory_costs.sram_access(device, 1e6 * 8, 64) == pytest.approx(100e-12, rel=0.01)


def test_sram_access_grows_with_memory_size_and_word_width():
    device = costs.Device("d", True, 0, 0, sram_energy_per_bit=2.0, sram_energy_fixed=100.0, sram_access_bits=64)
    assert memory_costs.sram_access(device, 1000, 16) == (2.0 * 1000 + 100.0) * 16 / 64
    assert memory_costs.sram_access(costs.Device("m", True, 0, 0), 1000, 16) == 0.0  # no law: inside the ops


def test_fair_baseline_profile_has_horowitz_int8_figures():
    devices = costs.load_devices()
    fair = devices[memory_costs.FAIR_BASELINE]
    assert fair.mac == pytest.approx(0.2e-12 + 0.03e-12) and fair.energy_per_synop == pytest.approx(0.03e-12)
    assert (fair.weight_bits, fair.activation_bits) == (8, "levels")
    assert devices["45nm"].mac == pytest.approx(3.7e-12 + 0.9e-12)  # fp32 mult + add, as before
    assert [memory_costs.level_bits(n) for n in (1, 2, 3, 4, 7, 8, None)] == [1, 2, 2, 3, 3, 4, 8]


def test_memory_aware_snn_and_ann_by_hand():
    """Weight reads: the ANN once per 5 positions (its output tile), the SNN once per SOP; membranes read and
    written per SOP and per update; one bias read per output (ANN) or neuron and step (SNN); events read from a
    queue, addressed (2 + kernel ops) and sent. Unit SRAM: an access of w bits costs w J."""
    device = costs.Device("u", **UNIT)
    e = memory_costs.model_energies(_records(), 4, device)
    ann, snn = e["memory_aware"]["ann_parts"], e["memory_aware"]["snn_parts"]
    # ANN: a: 100/5 weight reads x 8, 5 bias x 16, 100/min(10, 2) input reads x 4 + 5 writes x 4;
    #      b: 60/3 x 8, 3 x 16, (60/2 + 8 pooling reads) x 4 + 3 x 4
    assert ann == {"compute": 300 + 5 + 180 + 16 + 3, "weights": 160 + 160, "membrane": 0, "bias": 80 + 48,
                   "io": 220 + 164, "events": 0}
    # SNN: a as the ANN but its 5 outputs are 16-bit currents; n0: 20 updates read+written, 20 bias reads, 7
    # events of 3-bit addresses written and sent; b: 84 SOPs read weights, read+write membranes, 7 events read
    # (3-bit address), each addressed in 2 + 1 ops; n1: 12 updates, 12 bias reads, 2 events of 2 bits, sent
    assert snn == {"compute": 300 + 84 * 2 + 32, "weights": 160 + 84 * 8, "membrane": 2 * 20 * 16 + 2 * 84 * 16
                   + 2 * 12 * 16, "bias": 80 + 20 * 16 + 12 * 16, "io": (200 + 5 * 16) + 7 * 3 + 7 * 3 + 2 * 2,
                   "events": 7 * 10 + 7 * 3 + 2 * 10}
    assert e["compute_only"] == {"ann_J": 504.0, "snn_J": 500.0}
    assert e["memory_aware"]["snn_J"] == pytest.approx(sum(snn.values()))


def test_graded_spikes_pay_one_message_and_its_payload_per_burst():
    """loihi2-like: b's 7 spikes came in 4 bursts, each one SOP per synapse (48) with a 3-bit payload (0.25 J a
    bit); the message carries the payload (6-bit events into b), one message per burst out of n0 and n1."""
    device = costs.Device("g", **UNIT | {"graded": True, "energy_per_payload_bit": 0.25})
    e = memory_costs.model_energies(_records(), 4, device)
    assert e["compute_only"]["snn_J"] == 300 + 48 * 2 + 48 * 3 * 0.25 + 32
    snn = e["memory_aware"]["snn_parts"]
    assert snn["weights"] == 160 + 48 * 8 and snn["events"] == 4 * 10 + 4 * 3 + 1 * 10
    assert snn["io"] == (200 + 5 * 16) + 4 * 3 + 4 * (3 + 3) + 1 * 2
    # the same spikes on a binary device (Loihi 1) pay every spike
    assert memory_costs.model_energies(_records(), 4, costs.Device("b", **UNIT))["compute_only"]["snn_J"] == 500


def test_fair_baseline_reads_activations_at_their_own_bits():
    """With activation_bits = "levels", n0 (L = 2) carries 2 bits, n1 (L = 4) 3 bits, the image 8."""
    device = costs.Device("q", **UNIT | {"activation_bits": "levels"})
    ann = memory_costs.model_energies(_records(), 4, device, {"n0": 2, "n1": 4})["memory_aware"]["ann_parts"]
    assert ann["io"] == (50 * 8 + 5 * 2) + (38 * 2 + 3 * 3)


def test_break_even_is_where_the_snn_meets_the_fair_baseline():
    """Scaling the measured activity to the reported break-even makes the SNN cost exactly the fair ANN."""
    device = costs.Device("u", **UNIT)
    fair = costs.Device("f", **UNIT | {"energy_per_mac": 30.0, "activation_bits": "levels"})
    levels = {"n0": 2, "n1": 4}
    result = memory_costs.energy_models(_records(), 4, {"u": device}, levels, fair)
    entry = result["devices"]["u"]
    assert entry["sops_per_synapse"] == 84 / 160
    scale = entry["break_even_sops_per_synapse"] / entry["sops_per_synapse"]
    at_even = memory_costs.model_energies(memory_costs.scale_activity(_records(), scale), 4, device, levels)
    assert at_even["memory_aware"]["snn_J"] == pytest.approx(result["fair_baseline"]["memory_aware_J"])
    assert entry["memory_aware"]["snn_over_fair_ann"] == pytest.approx(
        entry["memory_aware"]["snn_J"] / result["fair_baseline"]["memory_aware_J"])
    dense = costs.Device("g", **UNIT | {"spiking": False})  # a GPU runs the 'SNN' densely: no SNN claim on it
    assert "snn_over_fair_ann" not in memory_costs.energy_models(_records(), 4, {"g": dense}, levels, fair)[
        "devices"]["g"]["memory_aware"]
    cheap = costs.Device("c", **UNIT | {"energy_per_mac": 0.0001, "activation_bits": "levels"})
    assert memory_costs.energy_models(_records(), 4, {"u": device}, levels, cheap)["devices"]["u"][
        "break_even_sops_per_synapse"] is None  # a silent SNN already costs more


def test_graph_layout_of_vgg_by_hand():
    channels = [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    pool_after = [i in (1, 3, 6, 9) for i in range(13)]
    rows = costs.graph_costs(layer_graph.nodes_from_spec(layer_graph.vgg_graph_spec(channels, pool_after, 4, 32)),
                             "logits")
    first, second, logits = rows[0], rows[1], rows[-1]
    assert (first.weights, first.kernel, first.positions, first.channels) == (3 * 3 * 3 * 8, 9, 32 * 32, 8)
    assert (second.weights, second.positions) == (3 * 3 * 8 * 8, 32 * 32)
    assert (logits.weights, logits.kernel, logits.positions, logits.channels) == (64 * 4, 1, 1, 4)


def test_simulation_counts_a_burst_as_one_event():
    ann = models.vgg16(4, image_size=32, width=0.125, seed=3, activation="qcfs", levels=4)
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    snn = simulation.SpikingNetwork.from_graph(layer_graph.build_graph(ann), timesteps=1, tau=None,
                                               neuron="signed_if", max_spikes=4, seed=1)
    out = snn.simulate(images, 1, return_outputs=True)
    spikes, events = out["spikes"].numpy(), out["events"].numpy()
    assert spikes.sum() > 0 and np.all(events <= spikes) and np.all(events * 4 >= spikes)
    # independently: at T = 1 a neuron sent a message iff its output is not 0
    fired = [np.count_nonzero(out["outputs"][n.name].numpy().reshape(2, -1), axis=1) for n in snn.neuron_nodes]
    assert np.array_equal(events[:, 0, :], np.stack(fired, axis=1)) and events.sum() < spikes.sum()
    records = snn.activity(spikes.sum(axis=1).mean(axis=0), 1, events.sum(axis=1).mean(axis=0))
    assert records[2]["payload_bits"] == math.ceil(math.log2(5)) + 1  # a burst of 1..4, and a sign


@pytest.mark.parametrize("text, wanted", [
    ('sram_energy_fixed = 1e-12\n', "give all three or none"),
    ('activation_bits = "lots"\n', 'activation_bits must be a whole number of bits or "levels"'),
    ('graded = 1\n', "graded must be true or false"),
    ('ann_output_tile = 0\n', "ann_output_tile must be a whole number, 1 or more"),
])
def test_bad_memory_fields_are_named(tmp_path, text, wanted):
    (tmp_path / "x.toml").write_text('name = "x"\nspiking = true\nenergy_per_synop = 1e-12\n'
                                     'energy_per_neuron = 1e-12\n' + text)
    with pytest.raises(UserError, match=wanted):
        costs.load_devices(tmp_path)


def test_loihi2_says_its_figures_are_bounds():
    loihi2 = costs.load_devices()["loihi2"]
    assert loihi2.graded and loihi2.energy_per_event > 0 and "no published" in loihi2.source.lower()


def test_old_energy_reports_still_print_and_summarise():
    """energy.json and report.json written before issue 29 have no memory-aware keys: they still print, and the
    recommendation then says it used the compute-only model."""
    old = {"model": "converted", "timesteps": 1, "ann_test_accuracy": 0.9, "snn_test_accuracy": 0.9,
           "spikes_per_image": 10.0, "sop_per_mac": 0.4,
           "summary": {"loihi": {"ann_J": 2.0, "snn_J": 1.0, "snn_over_ann": 0.5, "spiking": True}}}
    assert "compute-only model" in energy.format_summary(old) and "memory-aware" not in energy.format_summary(old)
    summary = {"run": "r", "ann_test_accuracy": 0.9, "snn": "s", "converted": [], "fine_tuned": None,
               "energy": {"model": "converted", "timesteps": 1, "snn_test_accuracy": 0.9, "spikes_per_neuron": 0.1,
                          "sop_per_mac": 0.4, "devices": {"loihi": {"ann_J": 2.0, "snn_J": 1.0, "snn_over_ann": 0.5}}},
               "wall_time_s": {}}
    assert "| loihi | compute-only | 2000 | 1000 | 0.50 |" in pipeline.format_summary(summary)
    report = {"devices": [{"name": "loihi"}], "models": [
        {"run": "a", "model": "ANN", "kind": "ann", "timesteps": None, "accuracy": 0.9, "energy_J": {"loihi": 1.0}},
        {"run": "a", "model": "SNN", "kind": "snn", "timesteps": 1, "accuracy": 0.9, "energy_J": {"loihi": 2.0}}]}
    assert report_pages.recommendations(report)[0]["energy_model"] == "compute-only"
    # with both models, the memory-aware joules decide
    for m, joules in zip(report["models"], (1.0, 0.5)):
        m["energy_J_memory"] = {"loihi": joules}
    pick = report_pages.recommendations(report)[0]
    assert (pick["model"], pick["energy_J"], pick["energy_model"]) == ("a: SNN T=1", 0.5, "memory-aware")


def test_records_without_a_layout_are_priced():
    """A spiking transformer's records carry no layout, adds or messages: one weight per synapse, no pooling."""
    records = [{"kind": "synapse", "name": "x", "events": 3.0, "connections": 40, "inputs": 10, "evaluations": 1},
               {"kind": "neurons", "name": "n", "neurons": 4, "spikes": 2.0, "rate": 0.1},
               {"kind": "attention", "name": "a", "accumulates": 5.0, "dense_macs": 20}]
    e = memory_costs.model_energies(records, 2, costs.Device("u", **UNIT))
    # 3 events x fan-out 4 = 12 SOPs, each reading an 8-bit weight; the attention's 5 accumulates at 2 J
    assert e["memory_aware"]["snn_parts"]["weights"] == 12 * 8
    assert e["compute_only"]["snn_J"] == 12 * 2 + 4 * 2 * 1 + 5 * 2

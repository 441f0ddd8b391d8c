"""Runs on event recordings (issue 32): a CNN trained on the accumulated ON/OFF frame through conversion, energy
and prediction; a spiking transformer on one frame per step; the refusals of input that does not fit."""
import importlib
import json

import numpy as np
import pytest

from snn4vision import cli, data
from snn4vision import events as ev
from snn4vision.stages.convert import ConvertConfig, convert_snn
from snn4vision.stages.energy import estimate_energy
from snn4vision.stages.fine_tuning import FineTuneConfig, fine_tune
from snn4vision.errors import UserError
from snn4vision.stages.predict import predict
from snn4vision.stages.report import ReportConfig, write_report
from snn4vision.rundir import TrainConfig, load_ann, open_run
from snn4vision.stages.training import train_ann, train_spiking_transformer

from ..conftest import TINY_TRAIN_ARGS, make_subset

convert_module = importlib.import_module("snn4vision.stages.convert")

pytestmark = pytest.mark.pipeline

CLASSES = ["beach", "chaparral", "forest", "runway"]


@pytest.fixture(scope="module")
def event_folder(tmp_path_factory, ucmerced):
    """4 UC Merced classes x 30 images emulated as 32 x 32 recordings (.npz)."""
    root = tmp_path_factory.mktemp("events")
    make_subset(root / "images", CLASSES, 30)
    ev.write_emulated_dataset(root / "images", root / "recordings", size=32)
    return root


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, event_folder):
    run_dir = tmp_path_factory.mktemp("cnn") / "run"
    args = cli.train_ann_parser().parse_args(["--run", str(run_dir), "--dataset", str(event_folder / "recordings"),
                                              *TINY_TRAIN_ARGS])
    return run_dir, train_ann(cli.train_config(args), verbose=False)


def same_costs(report_row: dict, energy: dict, device: str) -> None:
    """The report measured a model as the energy stage did: the same operations and memory-aware joules."""
    total = energy["layers"][-1]
    assert report_row["synaptic_ops"] == pytest.approx(total["snn_sops"] + total["snn_macs"], rel=1e-5)
    assert report_row["energy_J_memory"][device] == pytest.approx(energy["memory_aware"][device]["snn_J"], rel=1e-5)
    assert report_row["accuracy"] == pytest.approx(energy["snn_test_accuracy"])


def test_a_cnn_trains_on_accumulated_frames_converts_is_costed_and_predicts(cnn_run, event_folder, monkeypatch,
                                                                             tmp_path):
    run_dir, metrics = cnn_run
    config = json.loads((run_dir / "config.json").read_text())
    recorded = config["events"]
    assert recorded["sensor_size"] == [32, 32] and recorded["mode"] == "time" and recorded["frames"] is None
    assert recorded["duration_us"] is None
    # the splits are the images' seeded stratified splits, recording for image
    split = json.loads((run_dir / "split.json").read_text())
    images = data.split_manifest(data.scan_folder(event_folder / "images"), (0.8, 0.1, 0.1), 7)
    assert [item.replace(".npz", ".jpg") for item, _ in split["test"]] == [item for item, _ in images["test"]]
    # the model reads 2 channels; its inputs are the recordings' counts over the training split's largest count
    run = open_run(run_dir)
    ann = load_ann(run_dir, run.config, len(run.classes))
    assert tuple(ann.input_shape) == (None, 32, 32, 2)
    first = event_folder / "recordings" / split["test"][0][0]
    counts = ev.accumulated_frame(ev.read_events(first).events, (32, 32))
    got = next(iter(run.batches("test", 4)))[0].numpy()[0]
    np.testing.assert_allclose(got, np.minimum(counts / recorded["scale"], 1), atol=2e-3)  # float16 in the cache
    train = np.stack([ev.accumulated_frame(ev.read_events(event_folder / "recordings" / item).events, (32, 32))
                      for item, _ in split["train"]])
    assert recorded["scale"] == pytest.approx(np.percentile(train, 99))
    assert metrics["test"]["accuracy"] >= 0.4  # 4 classes: chance is 0.25 (measured: 7 of 12)
    # conversion simulates each T of its grid on the recordings binned into T frames, one per step
    presented = {}

    def spy(snn, batches, timesteps, label=None):
        presented.setdefault(timesteps, next(iter(batches))[0].numpy()[0])
        return simulate_split(snn, batches, timesteps, label)

    simulate_split = convert_module.simulate_split
    monkeypatch.setattr(convert_module, "simulate_split", spy)
    report = convert_snn(ConvertConfig(str(run_dir), max_timesteps=4, normalisation_images=32, sweep=False),
                         verbose=False)
    assert report["ann_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert "binned into T frames for each T" in report["input"]
    assert sorted(presented) == [1, 2, 4]
    first_events = ev.read_events(first).events
    for t, frames in presented.items():
        by_hand = ev.to_frames(first_events, (32, 32), t, "time") / recorded["scale"] * t
        np.testing.assert_allclose(frames, by_hand, rtol=2e-3, atol=2e-3)
    # fine-tuning trains and tests the SNN on each stage's T frames, one per step
    shapes = []

    def training_batches(decoded, *args, **kwargs):
        shapes.append(tuple(decoded.element_spec[0].shape))
        return batches_of(decoded, *args, **kwargs)

    batches_of = data.training_batches
    monkeypatch.setattr(data, "training_batches", training_batches)
    monkeypatch.setattr(importlib.import_module("snn4vision.stages.fine_tuning"), "simulate_split", spy)
    presented.clear()
    tuned = fine_tune(FineTuneConfig(str(run_dir), timesteps=2, epochs=1, max_train_images=16, batch_size=8),
                      verbose=False)  # stages: T = 1 for 2 epochs, T = 2 for 1
    assert shapes == [(1, 32, 32, 2), (1, 32, 32, 2), (2, 32, 32, 2)]
    assert sorted(presented) == [1, 2]
    for t, frames in presented.items():
        by_hand = ev.to_frames(first_events, (32, 32), t, "time") / recorded["scale"] * t
        np.testing.assert_allclose(frames, by_hand, rtol=2e-3, atol=2e-3)
    assert "binned into each stage's T frames" in tuned["input"]
    energy = estimate_energy(run_dir, ["loihi"], timesteps=4, model="converted", verbose=False)
    assert energy["ann_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    # the SNN took one frame per step; its first conv is driven by the input events: SOPs, no MACs
    test = [ev.read_events(event_folder / "recordings" / item).events for item, _ in split["test"]]
    assert energy["input_events_per_image"] == pytest.approx(np.mean([len(e) for e in test]), rel=2e-3)
    first_layer = energy["layers"][0]  # fan-out: its MACs per input value
    assert first_layer["snn_macs"] == 0 and first_layer["snn_sops"] == pytest.approx(
        energy["input_events_per_image"] * first_layer["ann_macs"] / (32 * 32 * 2), rel=1e-6)
    # the report measures the converted SNN on the same per-step frames, costed the same way
    report = write_report(ReportConfig([str(run_dir)], str(tmp_path / "report"), timesteps=[4], devices=["loihi"],
                                       timing_images=4), verbose=False)
    same_costs(next(m for m in report["models"] if m["model"].endswith("converted SNN")), energy, "loihi")
    # predict bins an event file as training did; the ANN's answer on it is the ANN's on the batch above
    rows = predict(run_dir, [str(first)], "ann")
    probabilities = np.exp(ann(got[None]).numpy()[0])
    assert rows[0]["class"] == run.classes[int(probabilities.argmax())]
    assert "spikes" in predict(run_dir, [str(first)], "snn")[0]
    image = next((event_folder / "images" / CLASSES[0]).iterdir())
    with pytest.raises(UserError, match="is not an event file: this run was trained on event recordings"):
        predict(run_dir, [str(image)], "ann")


def test_a_spiking_transformer_takes_one_frame_per_step(tmp_path, event_folder):
    run_dir = tmp_path / "sdt"
    args = cli.train_spiking_transformer_parser().parse_args(
        ["--run", str(run_dir), "--dataset", str(event_folder / "recordings"), "--model", "sdt", "--image-size",
         "32", "--depth", "1", "--dim", "32", "--heads", "2", "--timesteps", "3", "--epochs", "2", "--batch-size",
         "8", "--event-binning", "count", "--augment", "events"])
    train_spiking_transformer(cli.transformer_config(args), verbose=False)
    recorded = json.loads((run_dir / "config.json").read_text())["events"]
    assert recorded["frames"] == 3 and recorded["mode"] == "count"
    run = open_run(run_dir)
    frames = next(iter(run.batches("test", 4)))[0].numpy()
    assert frames.shape[1:] == (3, 32, 32, 2)
    # count binning: equal events per frame; the frames' mean over time is the accumulated frame
    recording = ev.read_events(event_folder / "recordings" / run.manifest["test"][0][0])
    accumulated = ev.accumulated_frame(recording.events, (32, 32)) / recorded["scale"]
    unsaturated = accumulated < 1
    np.testing.assert_allclose(frames[0].mean(axis=0)[unsaturated], accumulated[unsaturated], atol=3e-3)
    per_frame = ev.to_frames(recording.events, (32, 32), 3, "count").sum(axis=(1, 2, 3))
    assert per_frame.max() - per_frame.min() <= 1
    rows = predict(run_dir, [str(event_folder / "recordings" / run.manifest["test"][0][0])], timesteps=5)
    assert rows[0]["class"] in CLASSES and "spikes" in rows[0]
    # energy: the patch splitting's first conv reads the input events, one SOP per event and synapse
    energy = estimate_energy(run_dir, ["loihi"], verbose=False)
    test = [ev.read_events(event_folder / "recordings" / item).events for item, _ in run.manifest["test"]]
    assert energy["input_events_per_image"] == pytest.approx(np.mean([len(e) for e in test]), rel=2e-3)
    stem = energy["layers"][0]
    assert stem["snn_macs"] == 0 and stem["snn_sops"] == pytest.approx(
        energy["input_events_per_image"] * stem["ann_macs"] / (32 * 32 * 2), rel=1e-6)
    report = write_report(ReportConfig([str(run_dir)], str(tmp_path / "report"), devices=["loihi"],
                                       timing_images=4), verbose=False)
    same_costs(report["models"][0], energy, "loihi")


def test_accumulated_binning_gives_a_spiking_network_the_accumulated_frame_at_every_step(tmp_path, event_folder):
    run_dir = tmp_path / "sdt"
    args = cli.train_spiking_transformer_parser().parse_args(
        ["--run", str(run_dir), "--dataset", str(event_folder / "recordings"), "--model", "sdt", "--image-size",
         "32", "--depth", "1", "--dim", "32", "--heads", "2", "--timesteps", "3", "--epochs", "1", "--batch-size",
         "8", "--event-binning", "accumulated"])
    train_spiking_transformer(cli.transformer_config(args), verbose=False)
    recorded = json.loads((run_dir / "config.json").read_text())["events"]
    assert recorded["frames"] is None and recorded["mode"] == "accumulated"
    assert recorded["input"] == "the accumulated ON/OFF frame at every step"
    run = open_run(run_dir)
    assert not run.per_step and run.step_batches("test", 4, 3) is None
    got = next(iter(run.batches("test", 4)))[0].numpy()
    recording = ev.read_events(event_folder / "recordings" / run.manifest["test"][0][0])
    accumulated = ev.accumulated_frame(recording.events, (32, 32)) / recorded["scale"]
    assert got.shape[1:] == (32, 32, 2)
    np.testing.assert_allclose(got[0], np.minimum(accumulated, 1), atol=2e-3)
    # predict at another T still gives the one frame, which the network repeats
    assert ev.load_file(recording.path, run.config, 32, steps=5).shape == (32, 32, 2)
    rows = predict(run_dir, [recording.path], timesteps=5)
    assert rows[0]["class"] in CLASSES


def test_recordings_that_do_not_store_their_sensor_size_train_with_sensor_size(tmp_path, event_folder):
    bare = tmp_path / "npy"
    for name in CLASSES:
        (bare / name).mkdir(parents=True)
        for f in sorted((event_folder / "recordings" / name).iterdir())[:10]:
            ev.write_events(bare / name / (f.stem + ".npy"), ev.read_events(f).events)  # no sensor size

    def train(*extra):
        args = cli.train_ann_parser().parse_args(["--run", str(tmp_path / "run"), "--dataset", str(bare),
                                                  *TINY_TRAIN_ARGS, "--epochs", "1", *extra])
        return train_ann(cli.train_config(args), verbose=False)

    with pytest.raises(UserError, match="is not stored in the file: pass it \\(--sensor-size WIDTH HEIGHT"):
        train()
    with pytest.raises(UserError, match="fall outside its 16x16 sensor .*--sensor-size WIDTH HEIGHT"):
        train("--sensor-size", "16", "16")
    train("--sensor-size", "32", "32")
    run_dir = tmp_path / "run"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["event_sensor_size"] == [32, 32] and config["events"]["sensor_size"] == [32, 32]
    # the later stages read the bare files with the recorded size
    run = open_run(run_dir)
    assert run.source.read(0).sensor_size == (32, 32)
    test_file = bare / run.manifest["test"][0][0]
    assert predict(run_dir, [str(test_file)], "ann")[0]["class"] in CLASSES


def test_event_runs_refuse_what_does_not_fit(tmp_path, event_folder):
    def train(dataset, *extra):
        args = cli.train_ann_parser().parse_args(["--run", str(tmp_path / "run"), "--dataset", str(dataset),
                                                  *TINY_TRAIN_ARGS, *extra])
        with pytest.raises(UserError) as caught:
            train_ann(cli.train_config(args), verbose=False)
        assert "\n" not in str(caught.value)
        return str(caught.value)

    recordings = event_folder / "recordings"
    assert "--bands selects bands of multi-band images" in train(recordings, "--bands", "1,2")
    assert "drop it" in train(recordings, "--input-transform", "prewitt")
    assert "holds images: drop them" in train(event_folder / "images", "--event-binning", "count")
    assert "holds images: drop them" in train(event_folder / "images", "--sensor-size", "32", "32")
    # a recording of another sensor size among the others
    mixed = tmp_path / "mixed"
    for name in CLASSES:
        (mixed / name).mkdir(parents=True)
        for i, f in enumerate(sorted((recordings / name).iterdir())):
            recording = ev.read_events(f)
            size = (40, 40) if (name, i) == (CLASSES[1], 3) else (32, 32)
            ev.write_events(mixed / name / f.name, recording.events, size)
    assert "sensor, the run's recordings 32x32: use recordings of one sensor size" in train(mixed)
    both = tmp_path / "both"
    make_subset(both, CLASSES[:2], 3)
    for f in sorted((recordings / CLASSES[0]).iterdir())[:3]:
        (both / CLASSES[0] / f.name).symlink_to(f)
    assert "holds both images and event files" in train(both)
    # an event file given to a run trained on images (its config and classes are all predict reads first)
    image_run = tmp_path / "image_run"
    image_run.mkdir()
    (image_run / "config.json").write_text(json.dumps(TrainConfig(run_dir=str(image_run)).to_json()))
    (image_run / "classes.json").write_text(json.dumps(CLASSES))
    with pytest.raises(UserError, match="is an event file, but the run was trained on images"):
        predict(image_run, [str(next((recordings / CLASSES[0]).iterdir()))])

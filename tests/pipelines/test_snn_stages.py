"""End-to-end: convert_snn.py, fine_tune.py and predict.py on a tiny ANN trained on real images."""
import errno
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nir
import numpy as np
import pytest

from snn4vision.stages.convert import ConvertConfig, convert_snn
from snn4vision.rundir import load_snn
from snn4vision.data import load_image_file
from snn4vision.stages.energy import estimate_energy
from snn4vision.errors import UserError
from snn4vision.stages.export import ExportConfig, export_nir
from snn4vision.stages.fine_tuning import FineTuneConfig, fine_tune, schedule
from snn4vision.stages.predict import predict

from ..conftest import ROOT, UCMERCED, assert_is_a_drawn_png

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def converted(tmp_path_factory, trained_run):
    run_dir = tmp_path_factory.mktemp("snn") / "run"
    shutil.copytree(trained_run[0], run_dir)
    report = convert_snn(ConvertConfig(str(run_dir), max_timesteps=8, tau=0.002, normalisation_images=64),
                         verbose=False)
    return run_dir, report


def test_conversion_report(converted, trained_run):
    run_dir, report = converted
    assert report["ann_test_accuracy"] == pytest.approx(trained_run[1]["test"]["accuracy"])
    names = [v["name"] for v in report["variants"]]
    assert names == ["converted", "no normalisation", "tau 5 ms", "no synapse", "dt 10 ms",
                     "no synapse, 4 spikes per step at the percentile"]
    for variant in report["variants"]:
        assert [r["timesteps"] for r in variant["by_timesteps"]] == [1, 2, 4, 8]
    rows = report["variants"][0]["by_timesteps"]
    # Independently: the saved SNN, reloaded, on the 12 test images decoded one by one, read out over the
    # last ceil(T / 2) steps, gives the reported accuracy and spikes at T = 8.
    split = json.loads((run_dir / "split.json").read_text())
    size = json.loads((run_dir / "config.json").read_text())["image_size"]
    root = split["source"]["root"]
    images = np.stack([load_image_file(f"{root}/{item}", size) for item, _ in split["test"]]) / np.float32(255)
    labels = np.array([label for _, label in split["test"]])
    result = load_snn(run_dir).simulate(images.astype(np.float32), 8)
    predictions = result["logits"].numpy()[:, -4:].mean(axis=1).argmax(1)
    assert rows[-1]["accuracy"] == pytest.approx(np.mean(predictions == labels))
    assert rows[-1]["spikes_per_image"] == pytest.approx(result["spikes"].numpy().sum(axis=(1, 2)).mean(), rel=1e-6)
    assert rows[-1]["spikes_per_image"] > rows[0]["spikes_per_image"] > 0  # spike counts grow with T
    # normalisation maps the 99.9th percentile to 1/dt = 1000 Hz; without it an activation a fires at a Hz
    plain = report["variants"][1]["by_timesteps"][-1]
    assert plain["spikes_per_image"] < rows[-1]["spikes_per_image"]
    assert_is_a_drawn_png(run_dir / "conversion.png")
    assert json.loads((run_dir / "conversion.json").read_text())["test_images"] == 12


def test_converted_snn_reloads(converted):
    run_dir, _ = converted
    snn = load_snn(run_dir, timesteps=3)
    assert snn.timesteps == 3 and snn.tau == 0.002


def test_conversion_refuses_to_overwrite_and_bad_values(converted, tmp_path):
    run_dir, _ = converted
    with pytest.raises(UserError, match="--overwrite"):
        convert_snn(ConvertConfig(str(run_dir)))
    with pytest.raises(UserError, match="--tau must be positive"):
        convert_snn(ConvertConfig(str(run_dir), tau=-1.0))
    with pytest.raises(UserError, match="run pipelines/train_ann.py"):
        convert_snn(ConvertConfig(str(tmp_path)))


def test_schedule_doubles_timesteps_and_keeps_cost():
    stages = schedule(FineTuneConfig("x", timesteps=10, epochs=1, batch_size=16, learning_rate=1e-4))
    assert [s["timesteps"] for s in stages] == [1, 2, 4, 8]
    assert [s["batch_size"] for s in stages] == [128, 64, 32, 16]
    assert [s["epochs"] for s in stages] == [8, 4, 2, 1]
    assert stages[0]["learning_rate"] == pytest.approx(8e-4)
    assert len({s["timesteps"] * s["epochs"] for s in stages}) == 1


def test_fine_tune_and_predict(converted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(converted[0], run_dir)
    report = fine_tune(FineTuneConfig(str(run_dir), timesteps=2, batch_size=16, max_train_images=48), verbose=False)
    assert [r["timesteps"] for r in report["results"]] == [1, 2]
    assert (run_dir / "fine_tuned.weights.h5").is_file()
    with pytest.raises(UserError, match="--overwrite"):
        fine_tune(FineTuneConfig(str(run_dir), timesteps=2))
    images = [str(UCMERCED / "beach" / "beach99.jpg"), str(UCMERCED / "forest" / "forest99.jpg")]
    for model in ("ann", "snn", "fine-tuned"):
        rows = predict(run_dir, images, model, timesteps=2)
        assert [r["class"] in {"beach", "chaparral", "forest", "runway"} for r in rows] == [True, True]
        assert all(0 < r["probability"] <= 1 for r in rows)
        assert ("spikes" in rows[0]) == (model != "ann")


def test_predict_script_bad_input(converted):
    result = subprocess.run([sys.executable, str(ROOT / "pipelines" / "predict.py"), "--run", str(converted[0]),
                             "/no/such/image.jpg"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: image file /no/such/image.jpg does not exist"


def test_energy_estimation_of_the_converted_snn(converted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(converted[0], run_dir)
    report = estimate_energy(run_dir, ["gpu", "loihi", "45nm"], timesteps=4, verbose=False)
    assert report["model"] == "converted" and report["timesteps"] == 4
    layers = report["layers"]
    assert [row["layer"] for row in layers][-2:] == ["logits", "total"]
    total = layers[-1]
    assert total["ann_J_gpu"] == pytest.approx(sum(row["ann_J_gpu"] for row in layers[:-1]))
    assert report["summary"]["loihi"]["snn_J"] == pytest.approx(total["snn_J_loihi"])
    # the same SNN at the same T on the same test images as conversion.json's T = 4 row (all 4 steps read out
    # there only if ceil(T / 2) = T, so compare spikes, which do not depend on the read-out)
    conversion = json.loads((run_dir / "conversion.json").read_text())["variants"][0]["by_timesteps"]
    t4 = next(r for r in conversion if r["timesteps"] == 4)
    assert report["snn_test_accuracy"] == pytest.approx(t4["accuracy_all_steps"])
    assert report["spikes_per_image"] == pytest.approx(t4["spikes_per_image"], rel=1e-6)
    assert (run_dir / "energy.csv").read_text().splitlines()[0].startswith("layer,ann_macs")
    assert_is_a_drawn_png(run_dir / "energy.png")
    with pytest.raises(UserError, match="unknown device"):
        estimate_energy(run_dir, ["tpu"], overwrite=True)


def test_fine_tune_survives_kill_9_and_resumes(converted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(converted[0], run_dir)
    argv = [sys.executable, str(ROOT / "pipelines" / "fine_tune.py"), "--run", str(run_dir), "--timesteps", "2",
            "--batch-size", "8", "--max-train-images", "32"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    state_file = run_dir / "checkpoints" / "fine_tune" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not state_file.exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "fine_tune.json").exists(), "fine-tuning finished before it could be killed"
    done_before = json.loads(state_file.read_text())["done"]
    # a checkpoint from before settings were saved with it, whose T = 2 stage had begun, resumed with flags that
    # give T = 1 four epochs: refused before it trains, its checkpoint untouched (it went on at "T=1 epoch 3/4",
    # training the SNN left at T = 2's end on T = 1 and overwriting the checkpoint)
    legacy = tmp_path / "legacy"
    shutil.copytree(run_dir, legacy)
    legacy_state = legacy / "checkpoints" / "fine_tune" / "state.json"
    saved = json.loads(legacy_state.read_text())
    saved.pop("config")
    legacy_state.write_text(json.dumps(saved | {"done": [[0, 0], [0, 1], [1, 0]]}))
    before = legacy_state.read_bytes()
    refused = subprocess.run([*argv[:2], "--run", str(legacy), *argv[4:], "--epochs", "2", "--resume"],
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: the fine-tuning checkpoint in {legacy} was written with another schedule (3 epochs done do not "
        "fit this one's T=1 x4, T=2 x2 epochs): resume with the flags it was started with, or start it again "
        "with --overwrite"]
    assert legacy_state.read_bytes() == before
    # resumed without the flags it started with (--timesteps 2, ...): it goes on with those, from its checkpoint
    # (the default T = 8 and batch 32 would have run other stages, or restored the checkpoint into another model)
    resumed = subprocess.run(argv[:4] + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming fine-tuning after {len(done_before)} epoch(s)" in resumed.stdout
    assert "resuming with the settings this fine-tuning started with" in resumed.stdout
    report = json.loads((run_dir / "fine_tune.json").read_text())
    assert [r["timesteps"] for r in report["results"]] == [1, 2]
    # stage n ran 2^(1-n) epochs: 2 + 1, none twice
    assert json.loads(state_file.read_text())["done"] == [[0, 0], [0, 1], [1, 0]]


def test_training_subsets_are_seeded_and_span_classes(trained_run):
    from snn4vision.rundir import open_run

    run = open_run(trained_run[0])
    a, b = run.sample("train", 12, seed=0), run.sample("train", 12, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(set(run.source.labels[a])) >= 3  # a prefix of the class-ordered split would hold one class
    assert not np.array_equal(a, run.sample("train", 12, seed=1))
    assert len(run.sample("train", None, seed=0)) == len(run.manifest["train"])


@pytest.fixture(scope="module")
def qcfs_converted(tmp_path_factory, small_subset):
    """A tiny QCFS ANN (L = 4, pooled maps not requantised) trained on real images and converted up to T = 8."""
    from snn4vision import cli
    from snn4vision.stages.training import train_ann

    from ..conftest import TINY_TRAIN_ARGS

    run_dir = tmp_path_factory.mktemp("qcfs") / "run"
    args = cli.train_ann_parser().parse_args(["--run", str(run_dir), "--dataset", str(small_subset),
                                              *TINY_TRAIN_ARGS, "--activation", "qcfs", "--levels", "4",
                                              "--pool-levels", "0"])
    metrics = train_ann(cli.train_config(args), verbose=False)
    return run_dir, metrics, convert_snn(ConvertConfig(str(run_dir), max_timesteps=8), verbose=False)


def test_qcfs_run_converts_to_signed_if_neurons(qcfs_converted):
    """convert_snn picks signed IF neurons with bursts of up to L = 4 for a QCFS ANN: at T = 1 they fire each
    QCFS level in one burst and reproduce the ANN's predictions on the real test images (that row is simulated on
    its own, not taken from the first step of the T = 8 run), as bursts of up to T do at T = L;
    energy_estimation costs the QCFS SNN."""
    run_dir, metrics, report = qcfs_converted
    assert report["neuron"] == "signed_if"
    assert [v["name"] for v in report["variants"]] == [
        "converted (QCFS, signed IF neurons, bursts of up to 4)", "QCFS, IF neurons", "QCFS, signed IF neurons",
        "QCFS, signed IF neurons, bursts of up to 8"]
    default, plain, signed, burst = ({r["timesteps"]: r for r in v["by_timesteps"]} for v in report["variants"])
    assert report["ann_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert report["ann_test_accuracy"] > 0.5
    assert burst[4]["accuracy"] == pytest.approx(report["ann_test_accuracy"])
    assert default[1]["accuracy"] == burst[1]["accuracy"]
    # the ANN up to float rounding at a level boundary: one test image at most
    assert abs(default[1]["accuracy"] - report["ann_test_accuracy"]) <= 1 / report["test_images"]
    assert plain[1]["accuracy"] < report["ann_test_accuracy"]  # one spike per step: no compression
    assert report["verify"]["unconverted"] == [] and report["verify"]["timesteps"] == 4  # verified at T = L
    assert (load_snn(run_dir).neuron, load_snn(run_dir).max_spikes) == ("signed_if", 4)
    for t in (1, 4):
        energy = estimate_energy(run_dir, ["loihi"], timesteps=t, overwrite=t > 1, verbose=False)
        assert energy["snn_test_accuracy"] == pytest.approx(default[t]["accuracy"])
        assert energy["spikes_per_image"] == pytest.approx(default[t]["spikes_per_image"], rel=1e-6)
    with pytest.raises(UserError, match="needs signed neurons"):
        convert_snn(ConvertConfig(str(run_dir), signed=False, max_spikes=2), overwrite=True)


def _fsync_fails_for(suffix):
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    return fsync


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_full_disk_during_conversion_is_one_line_and_leaves_no_half_output(converted, tmp_path, monkeypatch,
                                                                             capsys, overwrite):
    """The disk fills while snn.weights.h5 is written (after snn.json): one line, exit 2, and the run is as
    it was: no snn.json without weights, no temporary files, and an --overwrite's old results put back."""
    from snn4vision import checkpoints, cli

    run_dir = tmp_path / "run"
    shutil.copytree(converted[0], run_dir)
    if not overwrite:
        for name in ("snn.json", "snn.weights.h5", "conversion.json", "conversion.png"):
            (run_dir / name).unlink()
    def files():
        return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}

    before = files()
    monkeypatch.setattr(checkpoints.os, "fsync", _fsync_fails_for("snn.weights.h5"))

    def main(argv):
        convert_snn(ConvertConfig(str(run_dir), max_timesteps=2, sweep=False), overwrite=overwrite, verbose=False)

    with pytest.raises(SystemExit) as exit_status:
        cli.run(main)
    assert exit_status.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the disk is full (No space left on device")
    assert files() == before


def _perturb_h5(path):
    import h5py

    with h5py.File(path, "r+") as handle:
        names = []
        handle.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        handle[names[0]][...] = handle[names[0]][()] + 1


def test_outputs_made_from_changed_inputs_are_refused(converted, tmp_path):
    """provenance.json holds the hashes; a re-trained ANN under an old SNN, or an SNN file swapped in, is named."""
    run_dir = tmp_path / "run"
    shutil.copytree(converted[0], run_dir)
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["snn.weights.h5"]["stage"] == "convert"
    assert set(provenance["snn.weights.h5"]["inputs"]) == {"config.json", "split.json", "ann.weights.h5"}
    load_snn(run_dir)  # as written: accepted
    _perturb_h5(run_dir / "ann.weights.h5")  # as if the ANN were re-trained under the old SNN
    with pytest.raises(UserError, match=r"^snn.json in .* was made from ann.weights.h5, which has changed since "
                                        r"\(re-trained or replaced\): re-run pipelines/convert_snn.py --run .* "
                                        r"--overwrite$"):
        estimate_energy(run_dir, ["loihi"], verbose=False)
    with pytest.raises(UserError, match=r"^ann.weights.h5 in .* has changed since pipelines/train_ann.py wrote it"):
        convert_snn(ConvertConfig(str(run_dir)), overwrite=True, verbose=False)
    assert json.loads((run_dir / "provenance.json").read_text()) == provenance  # the refusal changed nothing
    shutil.copy(converted[0] / "ann.weights.h5", run_dir / "ann.weights.h5")
    _perturb_h5(run_dir / "snn.weights.h5")
    with pytest.raises(UserError, match=r"^snn.weights.h5 in .* has changed since pipelines/convert_snn.py wrote it"):
        predict(run_dir, [str(UCMERCED / "beach" / "beach99.jpg")], "snn")
    weights = run_dir / "snn.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UserError, match=r"^snn.weights.h5 in .* is damaged or incomplete \(it changed since "
                                        r"pipelines/convert_snn.py wrote it and no longer reads\)"):
        predict(run_dir, [str(UCMERCED / "beach" / "beach99.jpg")], "snn")


def test_fine_tuning_lowers_the_loss_of_the_converted_snn(converted, tmp_path):
    """On the images it trained on, at the T it trained for, the fine-tuned SNN's cross-entropy is below the
    converted SNN's (the same read-out, deterministic simulation: equal if nothing was learnt or saved), and more
    of the images are right (measured: loss 1.55 -> 1.38, 12 -> 17 of 48 images)."""
    import tensorflow as tf

    from snn4vision.rundir import load_fine_tuned
    from snn4vision.simulation import readout
    from snn4vision.rundir import open_run

    run_dir = tmp_path / "run"
    shutil.copytree(converted[0], run_dir)
    config = FineTuneConfig(str(run_dir), timesteps=2, epochs=4, batch_size=16, learning_rate=1e-3,
                            max_train_images=48)
    fine_tune(config, overwrite=True, verbose=False)
    run = open_run(run_dir)
    indices = run.sample("train", 48, config.seed)
    images, labels = [], []
    for x, y in data_batches(run, indices):
        images.append(x)
        labels.append(y)
    images, labels = np.concatenate(images), np.concatenate(labels)

    def loss_and_accuracy(snn):
        logits = readout(snn.simulate(images, 2)["logits"], 1).numpy()
        loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True).numpy().mean()
        return loss, np.mean(logits.argmax(1) == labels)

    before, after = loss_and_accuracy(load_snn(run_dir, 2)), loss_and_accuracy(load_fine_tuned(run_dir, 2))
    assert after[0] < 0.95 * before[0], (before, after)
    assert after[1] > before[1], (before, after)


def data_batches(run, indices):
    from snn4vision import data

    decoded = data.decoded_dataset(run.source, indices, run.config.image_size)
    return data.evaluation_batches(decoded, 64).as_numpy_iterator()


def test_export_nir_of_a_qcfs_run(qcfs_converted, tmp_path):
    """export_nir.py refuses signed bursts in one line; with --approximate it writes plain IF neurons whose test
    accuracy is the convert stage's own 'IF neurons' variant at the same T (an independent run of the same
    network), and with --check sinabs (when installed) sinabs runs the file to our predictions."""
    run_dir = tmp_path / "run"
    shutil.copytree(qcfs_converted[0], run_dir)
    conversion = json.loads((run_dir / "conversion.json").read_text())
    default, plain = ({r["timesteps"]: r for r in v["by_timesteps"]} for v in conversion["variants"][:2])
    script = [sys.executable, str(ROOT / "pipelines" / "export_nir.py"), "--run", str(run_dir)]
    result = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "negative spikes" in result.stderr and "--approximate" in result.stderr
    assert not (run_dir / "snn.nir").exists()
    check = "sinabs" if importlib.util.find_spec("sinabs") else "none"
    report = export_nir(ExportConfig(str(run_dir), approximate=True, check=check, check_images=8),
                        verbose=False)
    assert report["timesteps"] == 8 and report["neuron"] == "if"
    assert report["accuracy"] == pytest.approx(plain[8]["accuracy"])
    assert report["accuracy_before_approximation"] == pytest.approx(default[8]["accuracy"])
    assert report["spikes_per_image"] == pytest.approx(plain[8]["spikes_per_image"], rel=1e-5)
    graph = nir.read(run_dir / "snn.nir")
    assert report["node_types"]["IF"] == 13 and graph.metadata["timesteps"] == 8
    assert json.loads((run_dir / "nir_export.json").read_text())["accuracy"] == report["accuracy"]
    if check == "sinabs":
        agreement = report["sinabs"]
        assert agreement["images"] == 8 and agreement["same_predictions"] == 1.0
        assert agreement["spikes_differing"] < 1e-3  # float order may flip a spike at a threshold, no more
    with pytest.raises(UserError, match="already holds nir_export.json, snn.nir: pass --overwrite"):
        export_nir(ExportConfig(str(run_dir), approximate=True), verbose=False)
    with pytest.raises(UserError, match="folder .* does not exist"):
        export_nir(ExportConfig(str(run_dir), approximate=True, out=str(tmp_path / "no" / "x.nir")),
                   verbose=False, overwrite=True)

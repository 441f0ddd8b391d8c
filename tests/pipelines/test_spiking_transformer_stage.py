"""End-to-end: train_spiking_transformer.py on real UC Merced images, resume, energy and predict."""
import json
import subprocess
import sys

import numpy as np
import pytest

from snn4vision import cli
from snn4vision.checkpoints import EpochCheckpointer
from snn4vision.stages.convert import ConvertConfig, convert_snn
from snn4vision.stages.energy import estimate_energy
from snn4vision.errors import UserError
from snn4vision.stages.predict import predict
from snn4vision.stages.training import train_spiking_transformer

from ..conftest import ROOT, UCMERCED, assert_is_a_drawn_png

pytestmark = pytest.mark.pipeline

SCRIPT = ROOT / "pipelines" / "train_spiking_transformer.py"
TINY = ["--image-size", "32", "--depth", "1", "--dim", "32", "--heads", "2", "--timesteps", "2", "--epochs", "8",
        "--batch-size", "8", "--learning-rate", "2e-3", "--warmup-epochs", "0", "--seed", "3"]


def _config(run_dir, dataset, model="spikformer", extra=()):
    args = cli.train_spiking_transformer_parser().parse_args(
        ["--run", str(run_dir), "--dataset", str(dataset), "--model", model, *TINY, *extra])
    return cli.transformer_config(args)


@pytest.fixture(scope="module")
def spikformer_run(tmp_path_factory, small_subset):
    run_dir = tmp_path_factory.mktemp("spikformer") / "run"
    return run_dir, train_spiking_transformer(_config(run_dir, small_subset), verbose=False)


def test_spikformer_learns_real_images(spikformer_run):
    run_dir, metrics = spikformer_run
    # 4 classes: chance is 25 %.
    assert metrics["train"]["accuracy"] > 0.5
    assert metrics["val"]["accuracy"] + metrics["test"]["accuracy"] > 2 * 0.35
    rates = metrics["firing_rates"]
    assert "block0/attention/q_lif" in rates and all(0 <= r <= 1 for r in rates.values())
    assert 0 < np.mean(list(rates.values())) < 0.5
    assert all("mean_firing_rate" in h for h in metrics["history"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["architecture"] == "spikformer" and config["transformer"]["timesteps"] == 2
    assert (run_dir / "transformer.weights.h5").is_file()
    assert any((run_dir / "tensorboard" / "spikformer").iterdir())


def test_sdt_resumes_after_an_interruption_to_the_same_result(tmp_path, small_subset, monkeypatch):
    extra = ["--epochs", "3"]
    reference = train_spiking_transformer(_config(tmp_path / "ref", small_subset, "sdt", extra), verbose=False)
    save = EpochCheckpointer.save

    def crash_after_second_epoch(self, step, state, best_weights_of=None):
        save(self, step, state, best_weights_of)
        if step == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochCheckpointer, "save", crash_after_second_epoch)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_spiking_transformer(_config(run_dir, small_subset, "sdt", extra), verbose=False)
    monkeypatch.setattr(EpochCheckpointer, "save", save)
    resumed = train_spiking_transformer(_config(run_dir, small_subset, "sdt", extra), resume=True, verbose=False)
    assert len(resumed["history"]) == 3
    for a, b in zip(reference["history"], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert resumed["test"]["accuracy"] == pytest.approx(reference["test"]["accuracy"])


def test_energy_of_a_spiking_transformer(spikformer_run, tmp_path):
    run_dir, metrics = spikformer_run
    report = estimate_energy(run_dir, overwrite=True, verbose=False)
    assert report["model"] == "spikformer" and report["ann_test_accuracy"] is None
    assert report["snn_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    rows = {r["layer"]: r for r in report["layers"]}
    # the analog stem: a 3x3 conv from 3 to dim/8 = 4 channels at 32x32, paid once (the image is constant)
    assert rows["patch/conv0"]["snn_macs"] == 32 * 32 * 9 * 3 * 4
    assert rows["patch/conv0"]["ann_macs"] == 32 * 32 * 9 * 3 * 4
    # every later synapse is a spike-driven accumulate: no MACs, except the averaged head
    assert all(r["snn_macs"] == 0 for name, r in rows.items() if name not in ("patch/conv0", "head/dense", "total"))
    assert rows["block0/attention/attention"]["snn_sops"] > 0
    # neuron layers: rate in Hz at 1 ms per step matches metrics' spikes per neuron per step
    assert rows["block0/mlp/fc1_lif"]["firing_rate_hz"] == pytest.approx(
        1000 * metrics["firing_rates"]["block0/mlp/fc1_lif"], rel=1e-5)
    summary = report["summary"]
    assert summary["45nm"]["snn_J"] < summary["45nm"]["ann_J"]  # sparse accumulates beat dense MACs
    assert summary["gpu"]["snn_J"] > summary["gpu"]["ann_J"]  # a GPU computes every step densely
    assert (run_dir / "energy.csv").is_file()
    assert_is_a_drawn_png(run_dir / "energy.png")


def test_predict_and_convert_on_a_transformer_run(spikformer_run):
    run_dir, _ = spikformer_run
    image = sorted((UCMERCED / "forest").iterdir())[0]
    (row,) = predict(run_dir, [image])
    assert row["class"] in {"beach", "chaparral", "forest", "runway"} and row["spikes"] > 0
    with pytest.raises(UserError, match="already a spiking network"):
        convert_snn(ConvertConfig(str(run_dir)))


def test_train_ann_on_a_transformer_run_points_to_its_script_not_to_overwrite(spikformer_run, small_subset):
    from snn4vision import cli
    from snn4vision.stages.training import train_ann

    run_dir, _ = spikformer_run
    for flags, hint in ([["--resume"], "resume it with pipelines/train_spiking_transformer.py --resume"],
                        [[], "choose another --run directory"]):
        args = cli.train_ann_parser().parse_args(["--run", str(run_dir), "--dataset", str(small_subset), *flags])
        with pytest.raises(UserError) as caught:
            train_ann(cli.train_config(args), resume=args.resume, verbose=False)
        assert str(caught.value) == f"{run_dir} holds a spikformer run of pipelines/train_spiking_transformer.py: {hint}"
    assert (run_dir / "transformer.weights.h5").is_file()


def test_cli_errors_are_one_line(tmp_path, small_subset):
    result = subprocess.run([sys.executable, str(SCRIPT), "--run", str(tmp_path / "r"), "--dataset",
                             str(small_subset), "--dim", "36", "--heads", "8"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "dim must be a multiple of 8" in result.stderr and "Traceback" not in result.stderr

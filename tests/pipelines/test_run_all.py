"""End-to-end: run_all.py (train a QCFS ANN with a ReLU warm-up, convert, energy, summary) on real images."""
import json
import subprocess
import sys

import pytest

from snn4vision import cli
from snn4vision.errors import UserError
from snn4vision.pipeline import run_all

from ..conftest import ROOT, TINY_TRAIN_ARGS

SCRIPT = ROOT / "pipelines" / "run_all.py"


def _argv(run_dir, dataset, *extra):
    return ["--run", str(run_dir), "--dataset", str(dataset), *TINY_TRAIN_ARGS, "--levels", "4",
            "--qcfs-warmup", "0.5", "--timesteps", "4", "--no-sweep", *extra]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, small_subset):
    run_dir = tmp_path_factory.mktemp("all") / "run"
    result = subprocess.run([sys.executable, str(SCRIPT), *_argv(run_dir, small_subset)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir, result.stdout


def _vgg_neurons(image_size, width):
    """Neurons of the SNN4Space VGG-16 by hand: 13 conv layers, 'same' padding, 2x2 pooling after blocks 1-4."""
    blocks = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    total, size = 0, image_size
    for b, block in enumerate(blocks):
        total += sum(size * size * round(c * width) for c in block)
        size //= 2
    return total


def test_summary_agrees_with_the_stages(pipeline_run):
    run_dir, stdout = pipeline_run
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    conversion = json.loads((run_dir / "conversion.json").read_text())
    energy = json.loads((run_dir / "energy.json").read_text())
    assert summary["ann_test_accuracy"] == metrics["test"]["accuracy"]
    assert summary["neurons"] == _vgg_neurons(32, 0.25)
    chosen = conversion["variants"][0]["by_timesteps"]
    assert [r["timesteps"] for r in summary["converted"]] == [1, 2, 4]
    for row, stage in zip(summary["converted"], chosen):
        assert row["accuracy"] == stage["accuracy"]
        assert row["spikes_per_neuron"] == pytest.approx(stage["spikes_per_image"] / summary["neurons"])
    assert summary["energy"]["timesteps"] == 4  # T = L on the qcfs path
    assert set(summary["energy"]["devices"]) == {"gpu", "loihi", "45nm"}
    for name, device in summary["energy"]["devices"].items():
        assert device["snn_over_ann"] == pytest.approx(device["snn_J"] / device["ann_J"])
        assert device["snn_J"] == pytest.approx(energy["summary"][name]["snn_J"])
    # loihi prices a synaptic event and a MAC alike (27.1 pJ), a neuron update at 81 pJ: the SNN's joules less
    # its updates are its synaptic operations and first-layer MACs, which SOP/MAC counts per ANN MAC
    total = energy["layers"][-1]
    synaptic = (total["snn_J_loihi"] - total["snn_updates"] * 8.1e-11) / 2.71e-11
    assert summary["energy"]["sop_per_mac"] == pytest.approx(synaptic / total["ann_macs"], rel=1e-6)
    assert set(summary["wall_time_s"]) == {"train", "convert", "energy"}
    assert summary["fine_tuned"] is None
    markdown = (run_dir / "summary.md").read_text()
    assert "| converted SNN | 4 |" in markdown and "| loihi |" in markdown
    assert markdown.strip() in stdout  # the summary printed is the one written


def test_qcfs_warm_up_ends_quantised(pipeline_run):
    """Epochs 1-5 train a ReLU network, which is never kept as the best; thresholds come from the data."""
    run_dir, stdout = pipeline_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] >= 6
    assert "epoch 6: ReLU warm-up over" in stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["qcfs_warmup"] == 0.5 and config["activation"] == "qcfs"
    # the converted network is quantised (build_graph refuses a QCFS layer still in its warm-up)
    assert json.loads((run_dir / "conversion.json").read_text())["neuron"] == "signed_if"


def test_progress_is_plain_lines_when_redirected(pipeline_run):
    _, stdout = pipeline_run
    assert "\r" not in stdout
    assert "== train (1/3)" in stdout and "== energy (3/3)" in stdout
    assert "evaluating converted (QCFS, signed IF neurons, bursts of up to 2) (1/1)" in stdout


def test_resume_skips_finished_stages_and_keeps_the_summary(pipeline_run, small_subset):
    run_dir, _ = pipeline_run
    before = json.loads((run_dir / "summary.json").read_text())
    result = subprocess.run([sys.executable, str(SCRIPT), *_argv(run_dir, small_subset, "--resume")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("done earlier, skipped") == 3
    assert json.loads((run_dir / "summary.json").read_text()) == before


def test_run_all_refuses_a_used_run_directory_and_mismatched_flags(pipeline_run, small_subset, tmp_path):
    run_dir, _ = pipeline_run
    args = cli.run_all_parser().parse_args(_argv(run_dir, small_subset))
    with pytest.raises(UserError, match="already holds a run"):
        run_all(cli.run_all_config(args))
    args = cli.run_all_parser().parse_args(_argv(tmp_path / "new", small_subset, "--activation", "relu"))
    with pytest.raises(UserError, match="the qcfs path trains a QCFS ANN"):
        run_all(cli.run_all_config(args))


def test_resume_before_the_first_epoch_starts_training_again(pipeline_run, small_subset, tmp_path):
    """Killed during epoch 1: config and split exist, no checkpoint; --resume trains from the start."""
    import shutil

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.json", "classes.json", "split.json"):
        shutil.copy(pipeline_run[0] / name, run_dir / name)
    result = subprocess.run([sys.executable, str(SCRIPT), *_argv(run_dir, small_subset, "--resume")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/10" in result.stdout and (run_dir / "summary.json").is_file()
    assert json.loads((run_dir / "split.json").read_text()) == json.loads((pipeline_run[0] / "split.json").read_text())

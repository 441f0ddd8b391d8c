"""ResNets: built as described, converted exactly, and through train, convert and energy from the command line."""
import json

import numpy as np
import pytest

from snn4vision import cli, layer_graph, models
from snn4vision.stages.convert import ConvertConfig, convert_snn
from snn4vision.stages.energy import estimate_energy
from snn4vision.errors import UserError
from snn4vision.layers import QCFS
from snn4vision.simulation import SpikingNetwork
from snn4vision.stages.training import train_ann

pytestmark = pytest.mark.pipeline


@pytest.mark.parametrize("depth, activations, convs", [("resnet18", 17, 20), ("resnet20", 19, 21)])
def test_resnets_have_the_published_layout(depth, activations, convs):
    """ResNet-18: stem + 8 basic blocks (2 activations each) = 17 activations, 17 + 3 projection convs;
    ResNet-20: stem + 9 blocks = 19 activations, 19 + 2 projections. Both halve the map at each new stage."""
    model = models.resnet(depth, 5, image_size=32, width=0.25, seed=0)
    graph = layer_graph.build_graph(model)
    assert len(graph.neurons) == activations
    assert sum(n.op == "conv" for n in graph.nodes) == convs
    assert sum(n.op == "add" for n in graph.nodes) == (activations - 1) // 2
    last = [n for n in graph.nodes if n.op == "neuron"][-1]
    assert last.shape[:2] == ((4, 4) if depth == "resnet18" else (8, 8))


def test_a_qcfs_resnet20_converts_exactly_at_t_equal_l():
    model = models.resnet("resnet20", 4, image_size=16, width=0.5, seed=1, activation="qcfs", levels=4)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, QCFS):
            layer.quantising.assign(1.0)
            layer.threshold.assign(float(rng.uniform(0.5, 1.5)))
    images = rng.random((4, 16, 16, 3)).astype(np.float32)
    graph = layer_graph.build_graph(model)
    np.testing.assert_allclose(layer_graph.rate_forward(graph, images).numpy(), model(images).numpy(),
                               rtol=1e-4, atol=1e-5)
    snn = SpikingNetwork.from_graph(graph, timesteps=4, tau=None, neuron="signed_if", max_spikes=4)
    np.testing.assert_allclose(snn(images).numpy(), model(images).numpy(), rtol=1e-4, atol=1e-4)


def test_resnet20_through_train_convert_and_energy(tmp_path, small_subset):
    run_dir = tmp_path / "run"
    args = cli.train_ann_parser().parse_args(
        ["--run", str(run_dir), "--dataset", str(small_subset), "--architecture", "resnet20", "--image-size", "16",
         "--width", "0.5", "--epochs", "2", "--batch-size", "16", "--seed", "3"])
    metrics = train_ann(cli.train_config(args), verbose=False)
    assert json.loads((run_dir / "config.json").read_text())["architecture"] == "resnet20"
    report = convert_snn(ConvertConfig(str(run_dir), max_timesteps=2, tau=0.002, normalisation_images=32,
                                       sweep=False), verbose=False)
    assert report["ann_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert [r["layer"] for r in report["verify"]["layers"]][:2] == ["stem_act", "stage1_block1_act1"]
    energy = estimate_energy(run_dir, ["loihi"], verbose=False)
    rows = {r["layer"]: r for r in energy["layers"]}
    # the ANN's MACs by hand: 16x16 stem 3->8, stage 1 (16x16, 8 ch, 6 convs), stage 2 (8x8, 16 ch: 6 convs and
    # a 1x1 projection from 8), stage 3 (4x4, 32 ch: likewise from 16), the dense head 32 -> 4
    stage1 = 16 * 16 * 9 * 8 * 8 * 6
    stage2 = 8 * 8 * 9 * (8 * 16 + 16 * 16 * 5) + 8 * 8 * 8 * 16
    stage3 = 4 * 4 * 9 * (16 * 32 + 32 * 32 * 5) + 4 * 4 * 16 * 32
    assert rows["total"]["ann_macs"] == 16 * 16 * 27 * 8 + stage1 + stage2 + stage3 + 32 * 4
    assert rows["stem_conv"]["snn_macs"] == 16 * 16 * 27 * 8  # the only layer that reads the image
    assert rows["stage1_block1_conv2"]["snn_sops"] > 0 and rows["stage1_block1_conv2"]["snn_macs"] == 0


def test_a_resnet_refuses_no_batch_norm_in_one_line(tmp_path):
    args = cli.train_ann_parser().parse_args(["--run", str(tmp_path / "r"), "--architecture", "resnet18",
                                              "--no-batch-norm"])
    with pytest.raises(UserError, match="resnet18 always has BatchNorm"):
        cli.train_config(args).validate()


def test_a_resnet_has_no_block_pooling_to_move(tmp_path):
    """Pooling before the activations is a VGG-16 option: asking for it in a ResNet is refused in one line."""
    run = ["--run", str(tmp_path / "r"), "--architecture", "resnet20", "--activation", "qcfs"]
    args = cli.train_ann_parser().parse_args(run + ["--pool-before-activation"])
    with pytest.raises(UserError, match="--pool-before-activation applies to vgg16.*resnet20 has none: drop it"):
        cli.train_config(args).validate()

"""Shared fixtures: the real UC Merced data in ../shared/data and small subsets of it."""
import os
from pathlib import Path

import pytest

import snn4vision  # noqa: F401  (selects tf-keras before TensorFlow is imported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
UCMERCED = SHARED_DATA / "ucmerced"
UCMERCED_TIFF = SHARED_DATA / "ucmerced_tiff"


@pytest.fixture(scope="session")
def ucmerced() -> Path:
    if not UCMERCED.is_dir():
        pytest.fail(f"the UC Merced data is missing at {UCMERCED}: tests need ../shared/data beside the project")
    return UCMERCED


def make_subset(root: Path, classes, per_class: int, source: Path = UCMERCED) -> Path:
    """A folder of symlinks to the first ``per_class`` real images of ``classes``."""
    for name in classes:
        (root / name).mkdir(parents=True)
        for image in sorted((source / name).iterdir())[:per_class]:
            (root / name / image.name).symlink_to(image)
    return root


@pytest.fixture(scope="session")
def small_subset(tmp_path_factory, ucmerced) -> Path:
    """4 real UC Merced classes x 30 images (symlinks)."""
    return make_subset(tmp_path_factory.mktemp("ucm4"), ["beach", "chaparral", "forest", "runway"], 30)


TINY_TRAIN_ARGS = ["--image-size", "32", "--width", "0.25", "--epochs", "10", "--batch-size", "16", "--seed", "7"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_subset):
    """A tiny ANN trained in process on real images: (run_dir, metrics). Treat as read-only."""
    from snn4vision import cli
    from snn4vision.stages.training import train_ann

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    args = cli.train_ann_parser().parse_args(["--run", str(run_dir), "--dataset", str(small_subset),
                                              *TINY_TRAIN_ARGS])
    return run_dir, train_ann(cli.train_config(args), verbose=False)


def checkpoint_variables(run_dir: Path, stage: str = "ann") -> dict:
    """``{object path: value}`` of every variable in a run's last committed training checkpoint."""
    import json

    import tensorflow as tf

    state = json.loads((run_dir / "checkpoints" / stage / "state.json").read_text())
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / stage / state["checkpoint"]))
    return {name.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"): reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map() if name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")}


def assert_is_a_drawn_png(path: Path, min_colours: int = 8) -> None:
    """``path`` is a PNG that decodes, has a figure's size and is not blank (a plot draws many colours)."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 300 and image.height >= 200
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) >= min_colours


def vgg_layers(graph):
    """``(kernels, biases, pool_after, logits_kernel)`` of a VGG-pattern layer graph (conv, neuron, optional 2x2
    average pooling, ..., GAP, dense), for references written out layer by layer."""
    convs = [n for n in graph.nodes if n.op == "conv"]
    pooled = {graph_node.inputs[0] for graph_node in graph.nodes if graph_node.op == "avg_pool"}
    neuron_of = {n.inputs[0]: n.name for n in graph.nodes if n.op == "neuron"}
    logits = next(n for n in graph.nodes if n.op == "dense")
    return ([c.kernel for c in convs], [c.bias for c in convs], [neuron_of[c.name] in pooled for c in convs],
            logits.kernel)

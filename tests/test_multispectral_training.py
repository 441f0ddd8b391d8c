"""Issue 31 end to end: classes that differ only in a near-infrared band (B08) are separated by a network given
every band and not by the same network given RGB (B04, B03, B02) only; the all-band run then converts, costs
its first layer with 13 input channels and predicts multi-band files as its evaluation does."""
import json

import numpy as np
import pytest
import tifffile

from snn4vision import cli
from snn4vision.stages.convert import ConvertConfig, convert_snn
from snn4vision.stages.energy import estimate_energy
from snn4vision.stages.predict import predict
from snn4vision.stages.training import train_ann

from .test_multispectral import NAMES, write_geotiff

SIZE, PER_CLASS = 32, 30


@pytest.fixture(scope="module")
def nir_only(tmp_path_factory):
    """Two classes of 13-band uint16 GeoTIFFs drawn from one distribution in every band but B08, which is
    1,500 higher (5 standard deviations) for vegetation: RGB holds nothing about the class."""
    root = tmp_path_factory.mktemp("nir_only")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("bare", "vegetation")):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            array = rng.normal(2000, 300, (SIZE, SIZE, 13))
            array[..., 7] += 1500 * c
            write_geotiff(root / name / f"{name}{i:02d}.tif", np.clip(array, 0, 65535).astype(np.uint16), NAMES)
    return root


def _train(folder, run_dir, bands):
    argv = ["--run", str(run_dir), "--dataset", str(folder), "--image-size", str(SIZE), "--width", "0.125",
            "--epochs", "8", "--batch-size", "4", "--split", "0.5", "0.25", "0.25", "--augment", "none"]
    return train_ann(cli.train_config(cli.train_ann_parser().parse_args(argv + (["--bands", bands] if bands else []))),
                     verbose=False)


@pytest.fixture(scope="module")
def runs(nir_only, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {"all": (base / "all", _train(nir_only, base / "all", None)),
            "rgb": (base / "rgb", _train(nir_only, base / "rgb", "B04,B03,B02"))}


@pytest.mark.slow  # trains two 13-band networks: about 20 s
def test_all_bands_beat_rgb_when_the_classes_differ_only_in_near_infrared(runs):
    all_bands, rgb = runs["all"][1]["test"]["accuracy"], runs["rgb"][1]["test"]["accuracy"]
    print(f"test accuracy on 16 images: all 13 bands {all_bands:.3f}, RGB only {rgb:.3f}")
    assert all_bands >= 0.9
    assert rgb <= 0.75  # chance is 0.5; nothing in RGB tells the classes apart
    assert all_bands - rgb >= 0.25
    recorded = {name: json.loads((run_dir / "config.json").read_text()) for name, (run_dir, _) in runs.items()}
    assert recorded["all"]["bands"] is None and recorded["all"]["band_stats"]["numbers"] == list(range(1, 14))
    assert recorded["rgb"]["bands"] == "B04,B03,B02" and recorded["rgb"]["band_stats"]["numbers"] == [4, 3, 2]
    # B08 over the training split (15 images of each class): half of it 1,500 higher
    assert recorded["all"]["band_stats"]["mean"][7] == pytest.approx(2750, abs=15)
    assert recorded["all"]["band_stats"]["std"][7] == pytest.approx(np.sqrt(300 ** 2 + 750 ** 2), rel=0.02)


@pytest.mark.slow  # its runs are trained: about 20 s
def test_the_13_band_run_converts_costs_and_predicts(runs, nir_only):
    run_dir = runs["all"][0]
    report = convert_snn(ConvertConfig(str(run_dir), max_timesteps=2, sweep=False), verbose=False)
    split = json.loads((run_dir / "split.json").read_text())
    assert report["test_images"] == len(split["test"]) == 16
    estimate_energy(run_dir, devices=["loihi"], timesteps=2)
    first = next(line for line in (run_dir / "energy.csv").read_text().splitlines()
                 if line.startswith("block1_conv1,"))
    assert int(first.split(",")[1]) == SIZE * SIZE * 3 * 3 * 13 * 8  # h w kh kw, 13 bands in, 8 filters out
    files = [str(nir_only / item) for item, _ in split["test"]]
    rows = predict(run_dir, files)
    labels = [label for _, label in split["test"]]
    predicted = [["bare", "vegetation"].index(row["class"]) for row in rows]
    accuracy = float(np.mean(np.asarray(predicted) == np.asarray(labels)))
    assert accuracy == pytest.approx(runs["all"][1]["test"]["accuracy"])  # predict sees what evaluation saw
    snn_rows = predict(run_dir, files[:2], model="snn", timesteps=2)
    assert all(row["spikes"] > 0 for row in snn_rows)
    assert tifffile.imread(files[0]).shape == (SIZE, SIZE, 13)

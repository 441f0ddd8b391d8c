"""A Prewitt run through every stage, and the snn4space fine-tuning recipe on it (dt 1 s down to 1 ms)."""
import json

import numpy as np
import pytest
import scipy.ndimage as ndimage
import tensorflow as tf

from snn4vision import cli
from snn4vision.stages.convert import ConvertConfig, convert_snn
from snn4vision.rundir import load_ann
from snn4vision.data import load_image_file
from snn4vision.stages.energy import estimate_energy
from snn4vision.stages.fine_tuning import RECIPES, FineTuneConfig, dt_ceiling, fine_tune, tau_ceiling
from snn4vision.stages.predict import predict
from snn4vision.rundir import TrainConfig, open_run
from snn4vision.stages.training import train_ann

from ..conftest import TINY_TRAIN_ARGS

pytestmark = pytest.mark.pipeline


def _prewitt_by_scipy(image):
    """Prewitt gradient magnitude per channel, by SciPy, with SNN4Space's scale (not yet thresholded)."""
    return np.stack([np.hypot(ndimage.prewitt(image[..., c], axis=0, mode="reflect"),
                              ndimage.prewitt(image[..., c], axis=1, mode="reflect")) for c in range(3)],
                    -1) / np.sqrt(10)


@pytest.fixture(scope="module")
def prewitt_run(tmp_path_factory, small_subset):
    run_dir = tmp_path_factory.mktemp("prewitt") / "run"
    args = cli.train_ann_parser().parse_args(["--run", str(run_dir), "--dataset", str(small_subset),
                                              *TINY_TRAIN_ARGS, "--input-transform", "prewitt"])
    metrics = train_ann(cli.train_config(args), verbose=False)
    return run_dir, metrics


def test_every_stage_sees_the_runs_edge_maps(prewitt_run):
    run_dir, metrics = prewitt_run
    assert json.loads((run_dir / "config.json").read_text())["input_transform"] == "prewitt"
    run = open_run(run_dir)
    assert TrainConfig.from_json(run.config.to_json()).input_transform == "prewitt"
    # the evaluation batches of convert, fine-tune and energy (RunData.batches) hold SciPy's edge maps
    size = run.config.image_size
    paths = [run.source.root / item for item, _ in run.manifest["test"]]
    magnitude = np.stack([_prewitt_by_scipy(load_image_file(p, size).astype(np.float32) / 255) for p in paths])
    expected = np.where(magnitude >= 2 / 255, magnitude, 0).astype(np.float32)
    got = np.concatenate([x.numpy() for x, _ in run.batches("test", 16)])
    clear = np.abs(magnitude - 2 / 255) > 1e-5  # leave out pixels where rounding may tip the threshold
    assert clear.mean() > 0.99
    np.testing.assert_allclose(got[clear], expected[clear], atol=1e-5)
    # predict applies the transform to the files it is given
    ann = load_ann(run_dir, run.config, len(run.classes))
    probabilities = tf.nn.softmax(ann(expected[:2])).numpy()
    rows = predict(run_dir, [str(p) for p in paths[:2]], "ann")
    assert [r["probability"] for r in rows] == pytest.approx(probabilities.max(axis=1).tolist(), rel=1e-3)
    # convert verifies the SNN on the first test batch: the ANN's first activations there are those of the edge
    # maps, not of the images; its ANN accuracy, and energy's, are training's test accuracy
    report = convert_snn(ConvertConfig(str(run_dir), max_timesteps=4, dt=1.0, max_rate=4000.0,
                                       normalisation_images=32, sweep=False), verbose=False)
    first = tf.keras.Model(ann.inputs, next(layer.output for layer in ann.layers
                                            if isinstance(layer, tf.keras.layers.ReLU)))
    verified = report["verify"]["layers"][0]["ann_mean"]
    assert verified == pytest.approx(float(first(got[:32]).numpy().mean()), rel=1e-4)
    rgb = np.stack([load_image_file(p, size) for p in paths[:32]]).astype(np.float32) / 255
    assert verified != pytest.approx(float(first(rgb).numpy().mean()), rel=1e-2)
    assert report["ann_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    energy = estimate_energy(run_dir, ["loihi"], timesteps=1, verbose=False)
    assert energy["ann_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_snn4space_recipe_takes_dt_and_tau_down_to_their_floors(prewitt_run):
    run_dir = prewitt_run[0]  # converted at dt 1 s, tau 0.1 s by the test above
    config = FineTuneConfig(str(run_dir), **(RECIPES["snn4space"] | dict(timesteps=4, epochs=1, batch_size=16)),
                            max_train_images=32, recipe="snn4space")
    report = fine_tune(config, verbose=False)
    assert report["dt_start"] == 1.0 and report["dt_final"] == pytest.approx(1e-3)
    trace = report["trace"]  # per epoch: stage T=1 has 4 epochs, T=2 two, T=4 one
    assert [row["timesteps"] for row in trace] == [1, 1, 1, 1, 2, 2, 4]
    # dt never leaves [floor, ceiling]: at the end of stage T=1 epoch e, the ceiling is 1e-3^((e/4)/2)
    for row, stage_progress in zip(trace, [(0, 0.25), (0, 0.5), (0, 0.75), (0, 1.0), (1, 0.5), (1, 1.0),
                                           (2, 1.0)]):
        ceiling = dt_ceiling(config, 1.0, *stage_progress)
        assert 1e-3 * (1 - 1e-6) <= row["dt"] <= ceiling * (1 + 1e-6)
        assert row["tau_mean"] <= tau_ceiling(config, 1.0, 0.1, row["dt"]) * (1 + 1e-6)
    assert trace[-1]["dt"] == pytest.approx(1e-3) and trace[-1]["tau_mean"] <= 1e-3 * (1 + 1e-6)
    saved = json.loads((run_dir / "fine_tuned.json").read_text())
    assert saved["dt"] == pytest.approx(1e-3)
    assert json.loads((run_dir / "fine_tune.json").read_text())["config"]["recipe"] == "snn4space"

"""--init-from: a new run on other classes starts from a finished run's backbone, with a new head."""
import json

import numpy as np
import pytest
import tensorflow as tf

from snn4vision import cli, rundir
from snn4vision.checkpoints import EpochCheckpointer, atomic_write_json
from snn4vision.stages.convert import ConvertConfig, convert_snn
from snn4vision.errors import UserError
from snn4vision.stages.training import train_ann
from snn4vision.transfer import transfer_weights

from ..conftest import TINY_TRAIN_ARGS, checkpoint_variables, make_subset

pytestmark = pytest.mark.pipeline

OTHER_CLASSES = ["airplane", "harbor", "river"]


@pytest.fixture(scope="module")
def other_classes(tmp_path_factory, ucmerced):
    return make_subset(tmp_path_factory.mktemp("ucm3"), OTHER_CLASSES, 20)


def _config(run_dir, dataset, *extra):
    args = cli.train_ann_parser().parse_args(["--run", str(run_dir), "--dataset", str(dataset), *TINY_TRAIN_ARGS,
                                              *extra])
    return cli.train_config(args)


def _weights(run_dir) -> dict:
    """``{variable name: value}`` of a run's trained model."""
    config = rundir.TrainConfig.from_json(json.loads((run_dir / "config.json").read_text()))
    classes = json.loads((run_dir / "classes.json").read_text())
    return {w.name: w.numpy() for w in rundir.load_trained_model(run_dir, config, len(classes)).weights}


def test_a_frozen_backbone_is_the_source_run_and_the_head_is_new(trained_run, other_classes, tmp_path):
    source_dir, _ = trained_run
    run_dir = tmp_path / "run"
    metrics = train_ann(_config(run_dir, other_classes, "--init-from", str(source_dir), "--epochs", "1",
                                "--freeze-backbone", "1"), verbose=False)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["init_from"] == str(source_dir) and config["freeze_backbone"] == 1
    transfer = config["transfer"]
    source, target = _weights(source_dir), _weights(run_dir)
    source_layers = {name.split("/")[0] for name in source}
    assert transfer["skipped"] == {"logits": "new head for 3 classes (the source has 4)"}
    assert set(transfer["copied"]) == source_layers - {"logits"}
    assert transfer["copied_values"] == sum(v.size for k, v in source.items() if not k.startswith("logits"))
    for name, value in source.items():
        if name.startswith("logits"):
            assert target[name].shape == value.shape[:-1] + (3,)
        elif "moving_" not in name:  # the frozen backbone; BatchNorm statistics follow the new data
            assert np.array_equal(target[name], value), name
    assert any(not np.array_equal(target[n], source[n]) for n in source if "moving_mean" in n)
    assert metrics["train"]["num_images"] == 48
    # the new run converts like any other
    report = convert_snn(ConvertConfig(str(run_dir), max_timesteps=2, tau=0.002, normalisation_images=32,
                                       sweep=False), verbose=False)
    assert report["ann_test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_a_transformer_gets_every_weight_but_its_head(tmp_path):
    """Direct: a saved Spikformer of 4 classes into a fresh one of 3."""
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    config = rundir.TrainConfig(str(source_dir), architecture="spikformer", image_size=32,
                                transformer=rundir.TransformerConfig(depth=1, dim=32, heads=2, timesteps=2,
                                                                     pooling="0111"))
    source = rundir.build_model(config, 4)
    source.save_weights(str(source_dir / rundir.TRANSFORMER_WEIGHTS))
    atomic_write_json(source_dir / rundir.CONFIG, config.to_json())
    atomic_write_json(source_dir / rundir.CLASSES, list("abcd"))
    tf.keras.utils.set_random_seed(1)
    target = rundir.build_model(config, 3)
    report = transfer_weights(target, source_dir, list("xyz"))
    assert set(report.skipped) == {"spikformer/head/dense"}
    stored = {w.name: w.numpy() for w in source.weights}
    for weight in target.weights:
        if weight.name.startswith("spikformer/head/"):
            assert weight.shape[-1] == 3
        else:
            assert np.array_equal(weight.numpy(), stored[weight.name]), weight.name
    # the same classes keep the head too
    again = rundir.build_model(config, 4)
    assert transfer_weights(again, source_dir, list("abcd")).skipped == {}
    assert all(np.array_equal(w.numpy(), stored[w.name]) for w in again.weights)


@pytest.mark.parametrize("extra, message", [
    (["--architecture", "resnet20"], "no weight of its vgg16 .* start from a run of the same --architecture"),
    (["--width", "0.5"], "no weight of its vgg16 \\(width 0.25\\)"),
    (["--weights", "x.h5"], "--init-from and --weights x.h5 both set the initial weights"),
])
def test_a_source_that_does_not_fit_is_one_line(trained_run, other_classes, tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        train_ann(_config(tmp_path / "run", other_classes, "--init-from", str(trained_run[0]), *extra),
                  verbose=False)
    assert not (tmp_path / "run" / "config.json").exists()


def test_backbone_flags_need_init_from(other_classes, tmp_path):
    with pytest.raises(UserError, match="--freeze-backbone and --backbone-lr-factor apply to a backbone copied by "
                                        "--init-from"):
        train_ann(_config(tmp_path / "run", other_classes, "--freeze-backbone", "2"), verbose=False)
    with pytest.raises(UserError, match="--init-from .*nowhere is not a run directory"):
        train_ann(_config(tmp_path / "run", other_classes, "--init-from", str(tmp_path / "nowhere")), verbose=False)


def test_a_transfer_run_resumes_from_its_checkpoint(trained_run, other_classes, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    config = _config(run_dir, other_classes, "--init-from", str(trained_run[0]), "--epochs", "2",
                     "--freeze-backbone", "1")
    save = EpochCheckpointer.save

    def crash_after_the_first_epoch(self, step, state, best_weights_of=None):
        save(self, step, state, best_weights_of)
        raise KeyboardInterrupt

    monkeypatch.setattr(EpochCheckpointer, "save", crash_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_ann(config, verbose=False)
    monkeypatch.setattr(EpochCheckpointer, "save", save)
    frozen = checkpoint_variables(run_dir)
    # the copied backbone and the optimizer's backbone factor come back from the checkpoint, not the source run
    metrics = train_ann(_config(run_dir, other_classes), resume=True, verbose=False)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["transfer"]["skipped"] == {
        "logits": "new head for 3 classes (the source has 4)"}
    trained = checkpoint_variables(run_dir)
    assert frozen["optimizer/backbone_factor"] == 0.0 and trained["optimizer/backbone_factor"] == 1.0
    moved = [k for k in frozen if "kernel" in k and not np.array_equal(frozen[k], trained[k])]
    assert len(moved) == len([k for k in frozen if "kernel" in k])  # epoch 2 trained the backbone too

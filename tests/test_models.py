import importlib.util

import numpy as np
import pytest
import tensorflow as tf

from snn4vision import cli, models, rundir
from snn4vision.cli import training_flags
from snn4vision.errors import UserError
from snn4vision.layers import QCFS

from .conftest import ROOT


def _analytic_conv_params(width=1.0):
    total, c_in = 0, 3
    for block in models.VGG16_BLOCKS:
        for c in block:
            c_out = models.scaled_channels(c, width)
            total += 3 * 3 * c_in * c_out + c_out
            c_in = c_out
    return total


def test_vgg16_conv_parameter_count_matches_vgg16():
    model = models.vgg16(10, image_size=32)
    conv_params = sum(layer.count_params() for layer in models.conv_layers(model))
    assert conv_params == _analytic_conv_params() == 14_714_688
    assert model.get_layer("logits").count_params() == 512 * 10  # bias-free logits


def test_vgg16_structure_is_snn4space():
    model = models.vgg16(21, image_size=64, width=0.25, batch_norm=True)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 13
    assert kinds.count("AveragePooling2D") == 4 and "MaxPooling2D" not in kinds
    assert kinds.count("BatchNormalization") == 13
    assert kinds[-2:] == ["GlobalAveragePooling2D", "Dense"]
    assert model.get_layer("logits").use_bias is False
    assert model.output_shape == (None, 21)
    assert model.get_layer("block5_conv3").output_shape == (None, 4, 4, 128)  # no pooling after block 5
    assert sum(layer.count_params() for layer in models.conv_layers(model)) == _analytic_conv_params(0.25)
    conv = model.get_layer("block1_conv1")
    assert isinstance(conv.kernel_regularizer, tf.keras.regularizers.L2)
    assert np.isclose(conv.kernel_regularizer.l2, 1e-4)
    assert isinstance(conv.bias_regularizer, tf.keras.regularizers.L1)


def test_pooling_before_the_activation_moves_only_the_pooling():
    """The same weights (a run's weights load into either order); each block's pooling sits between its last
    BatchNorm and activation; from block 5's last conv on, the layers are unchanged."""
    after = models.vgg16(3, image_size=32, width=0.125, batch_norm=True, seed=2, activation="qcfs")
    before = models.vgg16(3, image_size=32, width=0.125, batch_norm=True, seed=2, activation="qcfs",
                          pool_before_activation=True)
    assert [w.name for w in before.weights] == [w.name for w in after.weights]
    for a, b in zip(after.get_weights(), before.get_weights()):
        np.testing.assert_array_equal(a, b)
    names = [layer.name for layer in before.layers]
    for b, last in ((1, 2), (2, 2), (3, 3), (4, 3)):
        assert names.index(f"block{b}_bn{last}") + 1 == names.index(f"block{b}_pool") \
            == names.index(f"block{b}_qcfs{last}") - 1
    assert before.get_layer("block1_qcfs2").output_shape == (None, 16, 16, 8)
    assert names[-6:] == [layer.name for layer in after.layers][-6:]


def test_the_flag_reaches_the_model_and_the_saved_config(tmp_path):
    args = ["--run", str(tmp_path / "r"), "--activation", "qcfs", "--image-size", "32", "--width", "0.125"]
    config = cli.train_config(cli.train_ann_parser().parse_args(args + ["--pool-before-activation"]))
    assert rundir.TrainConfig.from_json(config.to_json()).pool_before_activation is True
    assert rundir.build_model(config, 3).get_layer("block1_qcfs2").output_shape == (None, 16, 16, 8)
    default = cli.train_config(cli.train_ann_parser().parse_args(args))
    assert default.pool_before_activation is False and default.levels == 2 and default.sparsity == 2.0
    # the preset requantises pooled maps at 2L levels, and the activations they read at 2L too
    assert (default.pool_levels, default.pre_pool_levels) == (4, 4)
    assert (config.pool_levels, config.pre_pool_levels) == (0, 0)  # not where the activations are pooled before
    more = cli.train_config(cli.train_ann_parser().parse_args(args + ["--levels", "4"]))
    relu = cli.train_config(cli.train_ann_parser().parse_args(args[:2] + ["--activation", "relu"]))
    assert (more.pool_levels, more.pre_pool_levels, relu.pool_levels, relu.pre_pool_levels) == (8, 8, 0, 0)
    unpooled = cli.train_config(cli.train_ann_parser().parse_args(args + ["--pool-levels", "0"]))
    unpooled.validate()  # nothing requantised, so nothing read at finer levels: valid
    assert unpooled.pre_pool_levels == 0
    # a run written before the option existed pooled after its activations
    legacy = {k: v for k, v in config.to_json().items() if k != "pool_before_activation"}
    assert rundir.TrainConfig.from_json(legacy).pool_before_activation is False


def test_library_callers_get_the_presets_derived_defaults_from_one_place(tmp_path):
    """TrainConfig.from_preset is what the CLI uses: a ReLU network from the quick preset gets no penalty, no
    distillation and no requantised pooled maps (dict(PRESETS["quick"]) | overrides kept pool_levels=4 and was refused), a QCFS one
    2L levels there, and what a caller gives is kept as given. Every variant of benchmarks/ann_recipe.py builds."""
    run = str(tmp_path / "r")
    relu = rundir.TrainConfig.from_preset("quick", run_dir=run, activation="relu")
    relu.validate()
    assert (relu.sparsity, relu.pool_levels, relu.pre_pool_levels, relu.distill, relu.preset, relu.epochs) == \
        (0.0, 0, 0, 0.0, "quick", 130)
    qcfs = rundir.TrainConfig.from_preset("quick", run_dir=run, activation="qcfs", levels=3)
    assert (qcfs.sparsity, qcfs.pool_levels, qcfs.pre_pool_levels, qcfs.distill) == (2.0, 6, 6, 0.7)
    # no ReLU warm-up epoch, nothing to distil from: off, and the config valid (on was refused)
    for no_warmup in (dict(qcfs_warmup=0.0), dict(epochs=1)):
        config = rundir.TrainConfig.from_preset("quick", run_dir=run, activation="qcfs", **no_warmup)
        config.validate()
        assert config.distill == 0.0
    assert rundir.TrainConfig.from_preset("quick", run_dir=run, activation="qcfs", distill=0.2).distill == 0.2
    resnet = rundir.TrainConfig.from_preset("full", run_dir=run, activation="qcfs", architecture="resnet18")
    resnet.validate()
    assert (resnet.pool_levels, resnet.pre_pool_levels, resnet.width, resnet.epochs) == (0, 0, 0.5, 160)
    kept = rundir.TrainConfig.from_preset("quick", run_dir=run, activation="relu", sparsity=0.5)
    assert kept.sparsity == 0.5
    assert rundir.TrainConfig.from_preset("quick", run_dir=run, activation="qcfs", pool_levels=0).pool_levels == 0
    flags = cli.train_config(cli.train_ann_parser().parse_args(["--run", run, "--activation", "relu"]))
    assert flags == relu  # the CLI's config is the library's
    with pytest.raises(UserError, match="unknown preset 'fast'"):
        rundir.TrainConfig.from_preset("fast", run_dir=run)
    spec = importlib.util.spec_from_file_location("ann_recipe", ROOT / "benchmarks" / "ann_recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    for _, overrides in recipe.VARIANTS.values():
        rundir.TrainConfig.from_preset("quick", run_dir=run, **overrides).validate()


def test_pre_pool_levels_set_the_levels_of_the_activations_each_pooling_reads():
    """--pre-pool-levels P: the last activation of blocks 1-4 (the one each requantised pooling averages) gets P
    levels, every other activation keeps --levels (block 5's last too: no pooling reads it), the weights are the
    same (a run's weights load), and the flag reaches the saved config; refused without --pool-levels."""
    plain = models.vgg16(3, image_size=32, width=0.125, batch_norm=True, seed=2, activation="qcfs", levels=2,
                         pool_levels=4)
    finer = models.vgg16(3, image_size=32, width=0.125, batch_norm=True, seed=2, activation="qcfs", levels=2,
                         pool_levels=4, pre_pool_levels=8)
    assert [w.name for w in plain.weights] == [w.name for w in finer.weights]
    for a, b in zip(plain.weights, finer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    levels = {layer.name: layer.levels for layer in finer.layers if isinstance(layer, QCFS)}
    read_by_pooling = {"block1_qcfs2", "block2_qcfs2", "block3_qcfs3", "block4_qcfs3"}
    assert {name for name, steps in levels.items() if steps == 8} == read_by_pooling
    assert all(steps == (4 if "pool" in name else 2) for name, steps in levels.items()
               if name not in read_by_pooling)
    with pytest.raises(UserError, match="needs --pool-levels"):
        models.vgg16(3, image_size=32, width=0.125, activation="qcfs", levels=2, pre_pool_levels=8)
    args = ["--run", "r", "--activation", "qcfs", "--image-size", "32", "--width", "0.125"]
    config = cli.train_config(cli.train_ann_parser().parse_args(args + ["--pre-pool-levels", "8"]))
    assert rundir.TrainConfig.from_json(config.to_json()).pre_pool_levels == 8
    assert rundir.build_model(config, 3).get_layer("block3_qcfs3").levels == 8
    legacy = {k: v for k, v in config.to_json().items() if k != "pre_pool_levels"}
    assert rundir.TrainConfig.from_json(legacy).pre_pool_levels == 0  # runs from before the option: --levels
    bad = cli.train_config(cli.train_ann_parser().parse_args(args + ["--pre-pool-levels", "8", "--pool-levels",
                                                                     "0"]))
    with pytest.raises(UserError, match="--pre-pool-levels sets"):
        bad.validate()
    negative = cli.train_config(cli.train_ann_parser().parse_args(args + ["--pre-pool-levels", "-1"]))
    with pytest.raises(UserError, match="--pre-pool-levels must be 0"):
        negative.validate()


def test_layer_levels_set_the_levels_of_the_qcfs_layers_they_name():
    """--layer-levels LAYER=L: the named QCFS layers get L over --levels, --pre-pool-levels and --pool-levels,
    every other layer keeps its own, the weights are the same (a run's weights load), the flag reaches the saved
    config and the model built from it; a name that is no QCFS layer, a bad L, a name given twice or a ReLU
    network is refused in one line."""
    kw = dict(image_size=32, width=0.125, batch_norm=True, seed=2, activation="qcfs", levels=2, pool_levels=4,
              pre_pool_levels=8)
    plain = models.vgg16(3, **kw)
    named = {"block2_qcfs1": 4, "block1_pool_qcfs": 8, "block3_qcfs3": 1, "block5_qcfs2": 1}
    mixed = models.vgg16(3, **kw, layer_levels=named)
    assert len(plain.weights) == len(mixed.weights)
    for a, b in zip(plain.weights, mixed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    before = {layer.name: layer.levels for layer in plain.layers if isinstance(layer, QCFS)}
    after = {layer.name: layer.levels for layer in mixed.layers if isinstance(layer, QCFS)}
    assert after == before | named and before["block3_qcfs3"] == 8 and before["block1_pool_qcfs"] == 4
    resnet = models.resnet("resnet20", 3, image_size=16, width=0.25, seed=0, activation="qcfs", levels=2,
                           layer_levels={"stage2_block1_act1": 4})
    assert {layer.name for layer in resnet.layers if isinstance(layer, QCFS) and layer.levels != 2} == {
        "stage2_block1_act1"}
    with pytest.raises(UserError, match="names block2_qcfs9, not a QCFS layer of this network: choose among "
                                        "block1_qcfs1, block1_qcfs2, block1_pool_qcfs"):
        models.vgg16(3, **kw, layer_levels={"block2_qcfs9": 4})
    with pytest.raises(UserError, match="needs --activation qcfs"):
        models.vgg16(3, image_size=32, width=0.125, layer_levels={"block2_relu1": 4})
    with pytest.raises(UserError, match="block2_qcfs1=0: the levels must be a whole number of at least 1"):
        models.vgg16(3, **kw, layer_levels={"block2_qcfs1": 0})
    parser = cli.train_ann_parser()
    args = ["--run", "r", "--activation", "qcfs", "--image-size", "32", "--width", "0.125"]
    config = cli.train_config(parser.parse_args(args + ["--layer-levels", "block2_qcfs1=4", "block5_qcfs3=1"]))
    config.validate()
    assert rundir.TrainConfig.from_json(config.to_json()).layer_levels == {"block2_qcfs1": 4, "block5_qcfs3": 1}
    built = rundir.build_model(config, 3)
    assert (built.get_layer("block2_qcfs1").levels, built.get_layer("block5_qcfs3").levels,
            built.get_layer("block1_qcfs1").levels, built.get_layer("block3_qcfs3").levels) == (4, 1, 2, 4)
    legacy = {k: v for k, v in config.to_json().items() if k != "layer_levels"}
    assert rundir.TrainConfig.from_json(legacy).layer_levels == {}  # runs from before the option
    assert cli.train_config(parser.parse_args(args)).layer_levels == {}
    with pytest.raises(UserError, match="gives block2_qcfs1 more than once"):
        cli.train_config(parser.parse_args(args + ["--layer-levels", "block2_qcfs1=4", "block2_qcfs1=8"]))
    with pytest.raises(UserError, match="^--levels gives b more than once"):  # benchmarks/quantisation_switch.py's
        training_flags.layer_levels([("a", 2), ("b", 4), ("b", 8)], "--levels")
    for bad in ("block2_qcfs1", "block2_qcfs1=0", "=4", "block2_qcfs1=two"):
        with pytest.raises(SystemExit):
            parser.parse_args(args + ["--layer-levels", bad])
    relu = cli.train_config(parser.parse_args(["--run", "r", "--layer-levels", "block2_relu1=4"]))
    with pytest.raises(UserError, match="--layer-levels sets the levels of QCFS layers: it needs --activation qcfs"):
        relu.validate()
    with pytest.raises(UserError, match=r"--layer-levels takes LAYER=L .*got \{.block2_qcfs1.: 2.5\}"):
        rundir.TrainConfig.from_preset("quick", run_dir="r", activation="qcfs",
                                       layer_levels={"block2_qcfs1": 2.5}).validate()
    with pytest.raises(UserError, match="--layer-levels takes LAYER=L"):
        rundir.TrainConfig.from_preset("quick", run_dir="r", activation="qcfs",
                                       layer_levels=[("block2_qcfs1", 4)]).validate()


def test_requantised_pooling_adds_a_qcfs_after_each_blocks_pooling():
    """--pool-levels P: the same weights (a run's weights load), a QCFS of P levels right after blocks 1-4's
    pooling, and the flag reaches the saved config; refused in one line where it has no pooled QCFS map."""
    plain = models.vgg16(3, image_size=32, width=0.125, batch_norm=True, seed=2, activation="qcfs", levels=2)
    pooled = models.vgg16(3, image_size=32, width=0.125, batch_norm=True, seed=2, activation="qcfs", levels=2,
                          pool_levels=4)
    same = {w.name: w.numpy() for w in pooled.weights}
    for w in plain.weights:
        np.testing.assert_array_equal(w.numpy(), same.pop(w.name))
    assert len(same) == 8  # the four new QCFS layers' threshold and quantising switch
    names = [layer.name for layer in pooled.layers]
    for b in range(1, 5):
        assert names.index(f"block{b}_pool_qcfs") == names.index(f"block{b}_pool") + 1
        assert pooled.get_layer(f"block{b}_pool_qcfs").levels == 4
    assert "block5_pool_qcfs" not in names and pooled.get_layer("block1_qcfs1").levels == 2
    with pytest.raises(UserError, match="needs --activation qcfs"):
        models.vgg16(3, image_size=32, width=0.125, pool_levels=4)
    args = ["--run", "r", "--activation", "qcfs", "--image-size", "32", "--width", "0.125"]
    config = cli.train_config(cli.train_ann_parser().parse_args(args + ["--pool-levels", "4"]))
    assert rundir.TrainConfig.from_json(config.to_json()).pool_levels == 4
    assert rundir.build_model(config, 3).get_layer("block2_pool_qcfs").levels == 4
    legacy = {k: v for k, v in config.to_json().items() if k != "pool_levels"}
    assert rundir.TrainConfig.from_json(legacy).pool_levels == 0  # runs from before the option: none
    for extra in (["--pool-before-activation"], ["--architecture", "resnet20"]):
        bad = cli.train_config(cli.train_ann_parser().parse_args(args + ["--pool-levels", "4", *extra]))
        with pytest.raises(UserError, match="--pool-levels requantises"):
            bad.validate()


def test_same_seed_same_initial_weights():
    a = models.vgg16(3, image_size=16, width=0.125, seed=4).get_weights()
    b = models.vgg16(3, image_size=16, width=0.125, seed=4).get_weights()
    c = models.vgg16(3, image_size=16, width=0.125, seed=5).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_weights_from_another_architecture_are_refused(tmp_path):
    other = models.vgg16(5, image_size=16, width=0.25)
    other.save_weights(str(tmp_path / "other.weights.h5"))
    with pytest.raises(UserError, match="do not fit"):
        models.vgg16(5, image_size=16, width=0.125, weights=str(tmp_path / "other.weights.h5"))


def test_weights_file_round_trip(tmp_path):
    a = models.vgg16(5, image_size=16, width=0.125, seed=1)
    a.save_weights(str(tmp_path / "a.weights.h5"))
    b = models.vgg16(5, image_size=16, width=0.125, seed=2, weights=str(tmp_path / "a.weights.h5"))
    x = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_missing_weights_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        models.vgg16(5, image_size=16, width=0.125, weights=str(tmp_path / "missing.h5"))


def test_imagenet_weights_offline_fail_clearly():
    try:
        import socket

        socket.create_connection(("storage.googleapis.com", 443), timeout=3).close()
        pytest.skip("online")
    except OSError:
        pass
    with pytest.raises(UserError, match="unreachable"):
        models.vgg16(5, image_size=32, weights="imagenet")
    with pytest.raises(UserError, match="--width 1.0"):
        models.vgg16(5, image_size=32, width=0.5, weights="imagenet")


def test_caffe_preprocessing_folds_into_first_conv():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    x = rng.random((1, 8, 8, 3)).astype(np.float32)  # RGB in [0, 1]
    caffe = x[..., ::-1] * 255.0 - np.array(models._CAFFE_MEAN_BGR, np.float32)
    expected = tf.nn.conv2d(caffe, kernel, 1, "VALID") + bias
    new_kernel, new_bias = models._absorb_caffe_preprocessing(kernel, bias)
    got = tf.nn.conv2d(x, np.ascontiguousarray(new_kernel), 1, "VALID") + new_bias
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-2)


def test_bad_model_arguments():
    with pytest.raises(UserError, match="image-size"):
        models.vgg16(5, image_size=8)
    with pytest.raises(UserError, match="2 classes"):
        models.vgg16(1, image_size=32)


@pytest.mark.slow  # a training: about 9 s
def test_qcfs_vgg_learns_its_thresholds():
    from snn4vision.layers import QCFS

    model = models.vgg16(3, image_size=16, width=0.125, batch_norm=True, seed=0, activation="qcfs", levels=4)
    assert [type(layer).__name__ for layer in model.layers].count("QCFS") == 13
    assert "ReLU" not in [type(layer).__name__ for layer in model.layers]
    before = [float(layer.threshold.numpy()) for layer in model.layers if isinstance(layer, QCFS)]
    model.compile(tf.keras.optimizers.Adam(0.05), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32)
    model.fit(x, np.arange(8) % 3, epochs=2, verbose=0)
    after = [float(layer.threshold.numpy()) for layer in model.layers if isinstance(layer, QCFS)]
    assert any(abs(a - b) > 1e-3 for a, b in zip(after, before))
    with pytest.raises(UserError, match="--activation"):
        models.vgg16(3, image_size=16, activation="tanh")

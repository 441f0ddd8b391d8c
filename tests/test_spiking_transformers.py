"""The spiking transformer layers against independent NumPy references (spikingjelly / reference-code semantics)."""
import numpy as np
import pytest
import tensorflow as tf

from snn4vision import cli, models, rundir
from snn4vision.errors import UserError
from snn4vision.layers import (LIF, SpikeDrivenBlock, SpikeDrivenMLP, SpikeDrivenPatchSplitting, SpikeDrivenSelfAttention,
                               SpikformerBlock, SpikingClassifierHead, SpikingMLP, SpikingPatchSplitting,
                               SpikingSelfAttention, max_pool_3x3)
from snn4vision.transformers import SpikingTransformer, measure


# ---------------------------------------------------------------- references
def lif_reference(x, tau=2.0, threshold=1.0, reset="hard"):
    """spikingjelly MultiStepLIFNode forward, x: (batch, time, ...)."""
    v = np.zeros_like(x[:, 0])
    spikes, hs = [], []
    for t in range(x.shape[1]):
        h = v + (x[:, t] - v) / tau
        s = (h >= threshold).astype(np.float32)
        v = h * (1 - s) if reset == "hard" else h - s * threshold
        spikes.append(s)
        hs.append(h)
    return np.stack(spikes, 1), np.stack(hs, 1)


def lif_gradient_reference(x, upstream, tau=2.0, threshold=1.0, alpha=4.0, reset="hard"):
    """Backpropagation through time by hand: detached reset, sigmoid surrogate."""
    spikes, h = lif_reference(x, tau, threshold, reset)
    grad_x = np.zeros_like(x)
    grad_v = np.zeros_like(x[:, 0])  # dL/dV[t] flowing back from step t + 1
    for t in reversed(range(x.shape[1])):
        sig = 1 / (1 + np.exp(-alpha * (h[:, t] - threshold)))
        dv_dh = (1 - spikes[:, t]) if reset == "hard" else 1.0
        grad_h = upstream[:, t] * alpha * sig * (1 - sig) + grad_v * dv_dh
        grad_x[:, t] = grad_h / tau
        grad_v = grad_h * (1 - 1 / tau)
    return grad_x


def bn_inference(x, layer):
    gamma, beta, mean, var = (w.numpy() for w in layer.weights)
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def dense(x, layer):
    w = layer.weights
    return x @ w[0].numpy() + (w[1].numpy() if len(w) > 1 else 0)


def lif_np(x, threshold=1.0):
    return lif_reference(x, threshold=threshold)[0]


def ssa_reference(x, layer):
    """Spikformer SSA in the reference's order: (Q K^T) V * 0.125 per head."""
    b, t, n, d = x.shape
    hd = d // layer.heads

    def qkv(name):
        return lif_np(bn_inference(dense(x, getattr(layer, name)), getattr(layer, f"{name}_bn")))

    q, k, v = (qkv(name).reshape(b, t, n, layer.heads, hd).transpose(0, 1, 3, 2, 4) for name in "qkv")
    attn = q @ k.transpose(0, 1, 2, 4, 3) * 0.125
    y = (attn @ v).transpose(0, 1, 3, 2, 4).reshape(b, t, n, d)
    y = lif_np(y, threshold=0.5)
    return lif_np(bn_inference(dense(y, layer.proj), layer.proj_bn))


def mlp_reference(x, mlp, spike_driven):
    if spike_driven:
        h = lif_np(bn_inference(dense(lif_np(x), mlp.fc1), mlp.fc1_bn))
        return bn_inference(dense(h, mlp.fc2), mlp.fc2_bn) + x
    h = lif_np(bn_inference(dense(x, mlp.fc1), mlp.fc1_bn))
    return lif_np(bn_inference(dense(h, mlp.fc2), mlp.fc2_bn))


def sdsa_reference(x, layer):
    s = lif_np(x)
    q, k, v = (lif_np(bn_inference(dense(s, getattr(layer, n)), getattr(layer, f"{n}_bn"))) for n in "qkv")
    kv = lif_np((k * v).sum(axis=2, keepdims=True), threshold=0.5)
    return bn_inference(dense(q * kv, layer.proj), layer.proj_bn) + x


def randomise_batch_norms(layer, rng):
    """Non-trivial BN statistics, so the references exercise them."""
    for sub in layer._flatten_layers():
        if isinstance(sub, tf.keras.layers.BatchNormalization):
            c = sub.weights[0].shape[0]
            sub.set_weights([rng.uniform(0.5, 2.0, c), rng.normal(0.3, 0.5, c), rng.normal(0, 0.3, c),
                             rng.uniform(0.3, 2.0, c)])


def calibrate_batch_norms(model, x):
    """Set every BN's moving statistics to those of ``x`` (momentum 0 for one training-mode pass),
    so that inference mode normalises as training does and the network spikes."""
    norms = [s for s in model._flatten_layers() if isinstance(s, tf.keras.layers.BatchNormalization)]
    for norm in norms:
        norm.momentum = 0.0
    model(x, training=True)
    for norm in norms:
        norm.momentum = 0.9


# ---------------------------------------------------------------- LIF
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_lif_forward_matches_spikingjelly_semantics(reset):
    x = np.random.default_rng(0).normal(0.8, 1.0, (3, 6, 5, 4)).astype(np.float32)
    expected, _ = lif_reference(x, tau=2.0, threshold=1.0, reset=reset)
    got = LIF(reset=reset)(x).numpy()
    np.testing.assert_array_equal(got, expected)
    assert 0.1 < got.mean() < 0.6  # the test input really spikes and really stays silent


def test_lif_hand_computed():
    # constant input 1.5, tau 2: H = 0.75 (no spike), then V=0.75 -> H = 1.125 spike, reset; repeat
    x = np.full((1, 4, 1), 1.5, np.float32)
    np.testing.assert_array_equal(LIF()(x).numpy().ravel(), [0, 1, 0, 1])
    # soft reset keeps the excess: 0.75, 1.125 -> 0.125, 0.8125, 1.15625 -> ...
    np.testing.assert_array_equal(LIF(reset="soft")(x).numpy().ravel(), [0, 1, 0, 1])
    np.testing.assert_array_equal(LIF(tau=4.0, threshold=0.5)(np.full((1, 3, 1), 1.0, np.float32)).numpy().ravel(),
                                  [0, 0, 1])


def test_lif_fires_when_the_membrane_reaches_the_threshold_exactly():
    # tau 2, input 2: H = 0 + (2 - 0) / 2 = 1.0 = threshold at every step after a hard reset (exact in float32)
    np.testing.assert_array_equal(LIF()(np.full((1, 3, 1), 2.0, np.float32)).numpy().ravel(), [1, 1, 1])
    # just below it never fires on the first step
    assert LIF()(np.full((1, 1, 1), 1.9990234, np.float32)).numpy().item() == 0


@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_lif_surrogate_gradient_matches_hand_bptt(reset):
    rng = np.random.default_rng(1)
    x = rng.normal(0.8, 1.0, (2, 5, 7)).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(LIF(reset=reset, alpha=4.0)(xt) * upstream)
    np.testing.assert_allclose(tape.gradient(loss, xt).numpy(), lif_gradient_reference(x, upstream, reset=reset),
                               rtol=1e-5, atol=1e-6)


def test_lif_rejects_bad_settings():
    with pytest.raises(ValueError, match="tau"):
        LIF(tau=0.5)
    with pytest.raises(ValueError, match="reset"):
        LIF(reset="zero")
    with pytest.raises(ValueError, match="timesteps"):
        tf.keras.Sequential([tf.keras.Input((None, 3)), LIF()])


# ---------------------------------------------------------------- attention, MLP, blocks
def _tokens(rng, shape=(2, 3, 6, 16), spikes=True):
    x = rng.random(shape) < 0.4 if spikes else rng.normal(0, 1.5, shape)
    return x.astype(np.float32)


def test_spikformer_self_attention_matches_reference():
    rng = np.random.default_rng(2)
    x = _tokens(rng)
    layer = SpikingSelfAttention(16, heads=4)
    layer(x)
    randomise_batch_norms(layer, rng)
    got = layer(x, training=False).numpy()
    np.testing.assert_allclose(got, ssa_reference(x, layer), atol=1e-5)
    assert 0 < got.mean() < 1


@pytest.mark.parametrize("block_class,spike_driven", [(SpikformerBlock, False), (SpikeDrivenBlock, True)])
def test_blocks_match_reference(block_class, spike_driven):
    rng = np.random.default_rng(3)
    x = _tokens(rng, spikes=not spike_driven)
    block = block_class(16, heads=4, mlp_ratio=2)
    block(x)
    randomise_batch_norms(block, rng)
    got = block(x, training=False).numpy()
    if spike_driven:
        expected = mlp_reference(sdsa_reference(x, block.attention), block.mlp, True)
    else:
        y = x + ssa_reference(x, block.attention)
        expected = y + mlp_reference(y, block.mlp, False)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert not np.allclose(got, x)


def test_max_pool_is_pytorchs_padding_1():
    x = np.random.default_rng(4).normal(size=(1, 6, 6, 1)).astype(np.float32)
    padded = np.pad(x[0, :, :, 0], 1, constant_values=-np.inf)
    expected = np.array([[padded[2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(3)] for i in range(3)])
    np.testing.assert_array_equal(max_pool_3x3(x).numpy()[0, :, :, 0], expected)


@pytest.mark.parametrize("layer_class", [SpikingPatchSplitting, SpikeDrivenPatchSplitting])
def test_patch_splitting_computes_the_static_stem_once_exactly(layer_class):
    """A static image equals the same image repeated as T frames; output is (batch, time, tokens, dim)."""
    image = np.random.default_rng(5).random((2, 16, 16, 3)).astype(np.float32)
    layer = layer_class(16, timesteps=3)
    static = layer(image, training=False).numpy()
    frames = layer(np.repeat(image[:, None], 3, axis=1), training=False).numpy()
    assert static.shape == (2, 3, 16, 16)  # two poolings: 16x16 -> 4x4 tokens
    np.testing.assert_allclose(static, frames, atol=1e-5)


@pytest.mark.parametrize("kind", ["spikformer", "sdt"])
def test_a_change_at_step_t_only_affects_steps_from_t(kind):
    rng = np.random.default_rng(6)
    model = SpikingTransformer(kind, num_classes=3, depth=1, dim=16, heads=2, timesteps=4)
    frames = rng.random((2, 4, 16, 16, 3)).astype(np.float32)
    calibrate_batch_norms(model, frames)
    later = frames.copy()
    later[:, 2] = rng.random((2, 16, 16, 3))
    record_a, record_b = [], []
    for x, sink in ((frames, record_a), (later, record_b)):
        h = model.patch(x, training=False)
        for block in model.blocks:
            h = block(h, training=False)
        sink.append(h.numpy())
    a, b = record_a[0], record_b[0]
    np.testing.assert_array_equal(a[:, :2], b[:, :2])
    assert not np.array_equal(a[:, 2:], b[:, 2:])


# ---------------------------------------------------------------- models
def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_published_parameter_counts():
    assert _trainable(models.spikformer(10)) == 9_324_730  # Spikformer-4-384, CIFAR-10 (9.32 M)
    # SDT-2-512: the forward path of the reference code. The reference also declares an unused
    # talking-heads Conv1d (8 x 8 weights per block) that never runs; it is not built here.
    assert _trainable(models.spike_driven_transformer(10)) == 10_233_418
    assert _trainable(models.spike_driven_transformer(100)) == 10_279_588  # the paper's 10.28 M


def test_model_errors_are_clear():
    with pytest.raises(UserError, match="heads"):
        models.spikformer(10, dim=40, heads=3)
    with pytest.raises(UserError, match="unknown"):
        models._spiking_transformer("vit", 10, 1, 16, 2, 4, 32, 4, "0011", 2.0, 4.0)


@pytest.mark.parametrize("build", [models.spikformer, models.spike_driven_transformer])
def test_models_save_and_reload_with_identical_outputs(tmp_path, build):
    rng = np.random.default_rng(7)
    model = build(5, depth=1, dim=16, heads=2, timesteps=2, image_size=16)
    images = rng.random((3, 16, 16, 3)).astype(np.float32)
    calibrate_batch_norms(model, images)
    path = tmp_path / "model.keras"
    model.save(path)
    copy = tf.keras.models.load_model(path)
    expected = model(images, training=False).numpy()
    np.testing.assert_array_equal(copy(images, training=False).numpy(), expected)
    assert np.ptp(expected) > 0  # the network is not silent


def test_every_layer_round_trips_through_keras_serialisation():
    rng = np.random.default_rng(10)
    tokens = (rng.random((2, 3, 4, 16)) < 0.5).astype(np.float32) * 2.0
    image = rng.random((2, 16, 16, 3)).astype(np.float32)
    cases = [(LIF(tau=3.0, threshold=0.5, alpha=2.0, reset="soft"), tokens),
             (SpikingPatchSplitting(16, timesteps=3, pooling="0101"), image),
             (SpikeDrivenPatchSplitting(16, timesteps=3, tau=1.5), image),
             (SpikingSelfAttention(16, 4, tau=1.5), tokens), (SpikeDrivenSelfAttention(16, 2), tokens),
             (SpikingMLP(16, 2), tokens), (SpikeDrivenMLP(16, 3, alpha=2.0), tokens),
             (SpikformerBlock(16, 2, 2), tokens), (SpikeDrivenBlock(16, 2, 2), tokens),
             (SpikingClassifierHead(4, spiking=True), tokens), (SpikingClassifierHead(4), tokens)]
    for layer, x in cases:
        layer(x)
        randomise_batch_norms(layer, rng)
        clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
        assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
        clone(x)
        clone.set_weights(layer.get_weights())
        np.testing.assert_array_equal(clone(x, training=False).numpy(), layer(x, training=False).numpy())


@pytest.mark.slow  # a training: about 6 s
def test_trains_with_fit_under_tf_function():
    rng = np.random.default_rng(8)
    tf.keras.utils.set_random_seed(8)
    model = models.spikformer(2, depth=1, dim=16, heads=2, timesteps=2, image_size=16)
    images = rng.random((32, 16, 16, 3)).astype(np.float32)
    labels = (images[:, :, :, 0].mean(axis=(1, 2)) > images[:, :, :, 2].mean(axis=(1, 2))).astype(np.int64)
    images[labels == 1, :, :, 0] += 0.5
    model.compile(tf.keras.optimizers.Adam(3e-3), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
    history = model.fit(images, labels, epochs=15, batch_size=16, verbose=0).history
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["accuracy"][-1] >= 0.8


def test_measured_activity_counts_spikes_and_synaptic_events():
    rng = np.random.default_rng(9)
    model = models.spikformer(3, depth=1, dim=16, heads=2, timesteps=2, image_size=16)
    images = rng.random((4, 16, 16, 3)).astype(np.float32)
    calibrate_batch_norms(model, images)
    result = measure(model, [(images, None)])
    layers = {e["name"]: e for e in result["layers"]}
    np.testing.assert_allclose(result["logits"], model(images, training=False).numpy(), atol=1e-6)
    # the stem is the analog conv, evaluated once for a static image
    stem = layers["patch/conv0"]
    assert stem["events"] is None and stem["evaluations"] == 1 and stem["connections"] == 16 * 16 * 9 * 3 * 2
    # conv1 receives lif0's spikes: events equal lif0's spike count
    assert layers["patch/conv1"]["events"] == pytest.approx(layers["patch/lif0"]["spikes"])
    # q, k and v all read the block input; fc2 reads fc1's spikes
    assert layers["block0/attention/q"]["events"] == layers["block0/attention/k"]["events"] > 0
    assert layers["block0/mlp/fc2"]["events"] == pytest.approx(layers["block0/mlp/fc1_lif"]["spikes"])
    assert 0 < layers["block0/attention/q_lif"]["rate"] < 1
    # one add per (k, v) spike pair per token and head, plus a row of K^T V per q spike
    assert layers["block0/attention/attention"]["accumulates"] > 0
    assert layers["block0/attention/q_lif"]["neurons"] == 4 * 4 * 16


def test_a_transformer_run_keeps_its_shape_in_its_own_config(tmp_path):
    """The shape lives under "transformer" in config.json and round-trips; the CLI's flags and a library caller
    get the same config from TrainConfig.from_transformer_preset."""
    run = str(tmp_path / "r")
    args = cli.train_spiking_transformer_parser().parse_args(["--run", run, "--model", "sdt", "--depth", "1",
                                                              "--timesteps", "3", "--epochs", "2"])
    config = cli.transformer_config(args)
    config.validate()
    # the quick preset's shape, but for the flags given; training fields stay flat
    assert config.transformer == rundir.TransformerConfig(depth=1, dim=256, heads=8, timesteps=3, mlp_ratio=4,
                                                          pooling="0111")
    assert (config.architecture, config.epochs, config.optimizer, config.preset) == ("sdt", 2, "adamw", "quick")
    assert config == rundir.TrainConfig.from_transformer_preset("quick", run_dir=run, architecture="sdt", depth=1,
                                                                timesteps=3, epochs=2)
    saved = config.to_json()
    assert saved["transformer"]["timesteps"] == 3 and "timesteps" not in saved and "depth" not in saved
    assert rundir.TrainConfig.from_json(saved) == config
    # the reference preset has no pooling of its own: the shape's default
    assert rundir.TrainConfig.from_transformer_preset("reference", run_dir=run).transformer.pooling == "0011"
    with pytest.raises(UserError, match="unknown preset 'big'"):
        rundir.TrainConfig.from_transformer_preset("big", run_dir=run)


def test_runs_written_with_the_flat_transformer_fields_still_load(tmp_path):
    """config.json of earlier versions held depth .. pooling flat in every run, ANN runs included (unused
    defaults there): a transformer run's become its shape, an ANN run's are dropped."""
    flat = dict(depth=1, dim=32, heads=2, timesteps=2, mlp_ratio=2, pooling="0111")
    old = rundir.TrainConfig(str(tmp_path / "r"), architecture="spikformer").to_json()
    old = {k: v for k, v in old.items() if k != "transformer"} | flat
    loaded = rundir.TrainConfig.from_json(old)
    assert loaded.transformer == rundir.TransformerConfig(**flat)
    assert rundir.build_model(loaded, 3).count_params() == models.spikformer(3, 1, 32, 2, 2, 64, 2, "0111",
                                                                            channels=3).count_params()
    ann = rundir.TrainConfig(str(tmp_path / "a")).to_json()
    ann = {k: v for k, v in ann.items() if k != "transformer"} | rundir.TransformerConfig().to_json()
    loaded_ann = rundir.TrainConfig.from_json(ann)
    assert loaded_ann.transformer is None and loaded_ann == rundir.TrainConfig(str(tmp_path / "a"))
    loaded_ann.validate()


def test_a_transformer_shape_is_refused_where_it_does_not_belong(tmp_path):
    run = str(tmp_path / "r")
    with pytest.raises(UserError, match=r"^a transformer shape .* applies to spikformer and sdt, not to vgg16"):
        rundir.TrainConfig(run, transformer={"depth": 3}).validate()
    with pytest.raises(UserError, match=r"transformer has unknown keys \['depht'\]"):
        rundir.TrainConfig(run, architecture="sdt", transformer={"depht": 3})
    with pytest.raises(UserError, match=r"^transformer must be a TransformerConfig or a dict of its fields \(depth, "):
        rundir.TrainConfig.from_json(rundir.TrainConfig(run, architecture="sdt").to_json() | {"transformer": [2]})
    for shape, flag in (({"dim": 36, "heads": 4}, "--dim"), ({"pooling": "012"}, "--pooling"),
                        ({"depth": 0}, "--depth"), ({"heads": 0}, "--heads"), ({"mlp_ratio": 0}, "--mlp-ratio")):
        with pytest.raises(UserError, match=f"^{flag} must"):
            rundir.TrainConfig(run, architecture="spikformer", transformer=shape).validate()

"""Behaviours of training no test checked (issue 33): the sparsity penalty of a ReLU network, the learning rate of
the warm-up epochs, resuming a QCFS run after its ReLU warm-up."""
import math

import numpy as np
import pytest
import tensorflow as tf

from snn4vision import checkpoints
from snn4vision.stages import training
from snn4vision.layers import QCFS
from snn4vision.rundir import TrainConfig

from .conftest import make_subset

L = tf.keras.layers


def test_relu_sparsity_penalty_by_hand():
    """ReLU layers add strength x sum_l w_l x mean(y_l) / max(y_l) (their rate per step once normalised), with
    w_l = neurons_l x fan-out of the layer that reads their spikes / the ANN's MACs. Here: a 3x3 conv with a fused
    ReLU on a 4x4x1 image (288 MACs, 32 neurons), a 1x1 conv to 3 channels (96 MACs, fan-out 3, 48 neurons), GAP
    and a dense layer to 2 logits (6 MACs; a spike reaches it through the GAP: fan-out 2)."""
    inputs = tf.keras.Input((4, 4, 1))
    x = L.Conv2D(2, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.ReLU(name="r2")(L.Conv2D(3, 1, name="c2")(x))
    model = tf.keras.Model(inputs, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x)))
    for layer in model.layers:  # positive biases: every layer has active neurons
        if layer.weights:
            layer.weights[1].assign(tf.fill(layer.weights[1].shape, 0.1))
    training.add_sparsity_penalty(model, 3.0)
    macs = 4 * 4 * 9 * 2 + 4 * 4 * 2 * 3 + 3 * 2
    weights = [32 * 3 / macs, 48 * 2 / macs]
    images = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype(np.float32)
    outputs = tf.keras.Model(model.inputs, [model.get_layer("c1").output, model.get_layer("r2").output])(images)
    ratios = [float(tf.reduce_mean(y) / tf.reduce_max(y)) for y in outputs]
    assert all(0.05 < r < 1 for r in ratios)
    model(images, training=True)
    assert len(model.losses) == 2
    assert float(tf.add_n(model.losses)) == pytest.approx(3.0 * np.dot(weights, ratios), rel=1e-5)


def test_learning_rate_of_each_warm_up_epoch_by_hand():
    """Warm-up over W epochs climbs in equal steps to the full rate, which the cosine decay starts from at epoch
    W (0-based): lr (e + 1) / (W + 1), never 0."""
    config = TrainConfig("r", learning_rate=4e-3, warmup_epochs=3, epochs=7, min_learning_rate=1e-5)
    rates = [config.learning_rate_at(e) for e in range(7)]
    assert rates[:4] == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3], rel=1e-12)
    # then cosine from 4e-3 towards 1e-5 over the 4 remaining epochs
    cosine = [1e-5 + (4e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)]
    assert rates[4:] == pytest.approx(cosine, rel=1e-12)
    assert TrainConfig("r", learning_rate=1e-3, warmup_epochs=0, epochs=4).learning_rate_at(0) == 1e-3
    assert TrainConfig("r", lr_schedule="plateau", warmup_epochs=3).learning_rate_at(0) is None


def small_qcfs_model(config, num_classes, weights=None):
    """Two conv-QCFS layers and a head: the run's schedule at a fraction of a VGG-16's tracing time."""
    inputs = tf.keras.Input((config.image_size, config.image_size, 3))
    x = QCFS(config.levels, config.qcfs_threshold, name="q1")(L.Conv2D(4, 3, name="c1")(inputs))
    x = QCFS(config.levels, config.qcfs_threshold, name="q2")(L.Conv2D(4, 3, strides=2, name="c2")(x))
    return tf.keras.Model(inputs, L.Dense(num_classes, name="head")(L.GlobalAveragePooling2D()(x)))


class _Interrupted(Exception):
    """Stands in for a kill after an epoch was committed."""


@pytest.mark.slow  # a training and its resume: about 5 s
def test_a_qcfs_run_resumed_after_its_warm_up_stays_quantised_with_its_thresholds(tmp_path, ucmerced, monkeypatch):
    """3 epochs, the first a ReLU warm-up (qcfs_warmup 0.34): the run stops after epoch 2, the first quantised one,
    and resumes. The resumed epoch must train the QCFS network with the thresholds it saved (not a ReLU network,
    not new thresholds), and each epoch's learning rate is the schedule's: lr / 2 (warm-up), lr, then halfway
    down the cosine."""
    subset = make_subset(tmp_path / "data", ["beach", "forest", "runway"], 10)
    config = TrainConfig(str(tmp_path / "run"), dataset=str(subset), image_size=16, width=0.125, batch_size=16,
                         epochs=3, learning_rate=1e-3, min_learning_rate=1e-5, warmup_epochs=1, augment="none",
                         activation="qcfs", levels=2, qcfs_warmup=0.34, kernel_l2=0.0, bias_l1=0.0)
    assert config.qcfs_from_epoch == 1
    fits, calibrations, saved = [], [], {}
    fit, save, calibrate = tf.keras.Model.fit, checkpoints.EpochCheckpointer.save, training.start_quantising

    def qcfs_state(model):
        layers = training.qcfs_layers(model)
        return [float(q.quantising.numpy()) for q in layers], [float(q.threshold.numpy()) for q in layers]

    def spy_fit(model, *args, **kwargs):
        fits.append(qcfs_state(model))
        saved["model"] = model
        return fit(model, *args, **kwargs)

    def spy_calibrate(*args, **kwargs):
        calibrations.append(calibrate(*args, **kwargs))
        return calibrations[-1]

    def save_then_stop(self, epoch, state, best_weights_of=None):
        save(self, epoch, state, best_weights_of)
        if epoch == 1 and "stopped" not in saved:
            saved["stopped"] = qcfs_state(saved["model"])
            raise _Interrupted

    monkeypatch.setattr(training, "build_model", small_qcfs_model)
    monkeypatch.setattr(tf.keras.Model, "fit", spy_fit)
    monkeypatch.setattr(training, "start_quantising", spy_calibrate)
    monkeypatch.setattr(checkpoints.EpochCheckpointer, "save", save_then_stop)
    with pytest.raises(_Interrupted):
        training.train_ann(config, verbose=False)
    assert len(fits) == 2 and len(calibrations) == 1
    assert set(fits[0][0]) == {0.0} and set(fits[1][0]) == {1.0}
    assert fits[1][1] == pytest.approx(calibrations[0], rel=1e-6)  # (float32 variables)
    metrics = training.train_ann(TrainConfig(config.run_dir), resume=True, verbose=False)
    assert len(calibrations) == 1  # not calibrated again
    assert len(fits) == 3 and set(fits[2][0]) == {1.0} and fits[2][1] == saved["stopped"][1]
    assert [e["epoch"] for e in metrics["history"]] == [1, 2, 3]
    assert [e["learning_rate"] for e in metrics["history"]] == pytest.approx([5e-4, 1e-3, (1e-3 + 1e-5) / 2],
                                                                             rel=1e-6)

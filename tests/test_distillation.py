"""--distill (issue 34): a QCFS network distilled from its own ReLU warm-up. The loss by hand, and a run whose
quantised epochs see the warm-up network's logits, saved at the switch and read back when the run resumes."""
import re

import numpy as np
import pytest
import tensorflow as tf

from snn4vision import checkpoints
from snn4vision.stages import training
from snn4vision.errors import UserError
from snn4vision.rundir import TrainConfig

from .conftest import make_subset
from .test_untested_behaviours_training import _Interrupted, small_qcfs_model


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_distillation_loss_and_accuracy_by_hand():
    labels = np.array([0, 0, 1], np.float32)
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 3.0, 0.0]], np.float32)
    teacher = np.array([[3.0, 0.0, 0.0], [-1.0, 0.0, 2.0], [0.0, 0.5, 1.0]], np.float32)
    weight, temperature = 0.3, 2.0
    hard = -_log_softmax(logits)[np.arange(3), labels.astype(int)].mean()
    p = np.exp(_log_softmax(teacher / temperature))
    kl = (p * (np.log(p) - _log_softmax(logits / temperature))).sum(axis=1).mean()
    loss = training.distillation_loss(3, weight, temperature)
    packed = tf.constant(np.concatenate([labels[:, None], teacher], axis=1))
    assert float(loss(packed, tf.constant(logits))) == pytest.approx((1 - weight) * hard + weight * 4.0 * kl,
                                                                     rel=1e-5)
    # plain labels (validation, the warm-up): the cross-entropy alone
    assert float(loss(tf.constant(labels), tf.constant(logits))) == pytest.approx(hard, rel=1e-5)
    accuracy = training.label_accuracy(3)  # argmax 0, 2, 1 against 0, 0, 1: the second is wrong
    assert np.mean(accuracy(packed, tf.constant(logits))) == pytest.approx(2 / 3)
    assert np.mean(accuracy(tf.constant(labels), tf.constant(logits))) == pytest.approx(2 / 3)


@pytest.mark.parametrize("changes, message", [
    (dict(distill=1.0), "--distill must be in [0, 1)"),
    (dict(distill=0.5, activation="relu", levels=4), "--distill distils a QCFS network"),
    (dict(distill=0.5, qcfs_warmup=0.0), "--distill distils a QCFS network"),
    (dict(distill=0.5, distill_temperature=0.0), "--distill-temperature must be positive"),
])
def test_bad_distillation_settings_are_refused(tmp_path, changes, message):
    config = TrainConfig(str(tmp_path / "run"), **{"activation": "qcfs", "levels": 2, **changes})
    with pytest.raises(UserError, match=re.escape(message)):
        config.validate()


@pytest.mark.slow  # two trainings: about 6 s
def test_quantised_epochs_distil_from_the_warm_up_relu_network_also_after_a_resume(tmp_path, monkeypatch):
    """3 epochs, the first a ReLU warm-up: epochs 2 and 3 must see each batch's labels packed with the logits of
    the network as the warm-up left it, run as ReLU (not the quantised network, not the network as it trains);
    the run stops after epoch 2 and resumes, and epoch 3 reads the same teacher back."""
    subset = make_subset(tmp_path / "data", ["beach", "forest", "runway"], 10)
    config = TrainConfig(str(tmp_path / "run"), dataset=str(subset), image_size=16, width=0.125, batch_size=16,
                         epochs=3, learning_rate=1e-3, warmup_epochs=1, augment="none", activation="qcfs",
                         levels=2, qcfs_warmup=0.34, kernel_l2=0.0, bias_l1=0.0, distill=0.5)
    seen, saved = [], {}
    fit, save, calibrate = tf.keras.Model.fit, checkpoints.EpochCheckpointer.save, training.start_quantising

    def spy_fit(model, batches, *args, **kwargs):
        seen.append(next(iter(batches)))
        return fit(model, batches, *args, **kwargs)

    def spy_calibrate(model, *args, **kwargs):
        saved["warm"] = model.get_weights()
        return calibrate(model, *args, **kwargs)

    def save_then_stop(self, epoch, state, best_weights_of=None):
        save(self, epoch, state, best_weights_of)
        if epoch == 1 and "stopped" not in saved:
            saved["stopped"] = True
            raise _Interrupted

    monkeypatch.setattr(training, "build_model", small_qcfs_model)
    monkeypatch.setattr(tf.keras.Model, "fit", spy_fit)
    monkeypatch.setattr(training, "start_quantising", spy_calibrate)
    monkeypatch.setattr(checkpoints.EpochCheckpointer, "save", save_then_stop)
    with pytest.raises(_Interrupted):
        training.train_ann(config, verbose=False)
    metrics = training.train_ann(TrainConfig(config.run_dir), resume=True, verbose=False)
    assert len(metrics["history"]) == 3 and len(seen) == 3
    assert seen[0][1].shape.rank == 1  # the warm-up: plain labels
    warm = small_qcfs_model(config, 3)
    warm.set_weights(saved["warm"])
    assert {float(q.quantising.numpy()) for q in training.qcfs_layers(warm)} == {0.0}
    for x, y in seen[1:]:
        assert y.shape == (x.shape[0], 4)
        expected = warm(x, training=False).numpy()
        np.testing.assert_allclose(y[:, 1:].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert set(np.unique(y[:, 0].numpy())) <= {0.0, 1.0, 2.0}

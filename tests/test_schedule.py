"""The plateau schedule and early stopping against Keras' own ReduceLROnPlateau and EarlyStopping."""
import numpy as np
import tensorflow as tf

from snn4vision.rundir import TrainConfig
from snn4vision.optimisation import PlateauSchedule


def test_plateau_and_early_stopping_match_keras_callbacks():
    # a loss that improves, stalls (with changes below min_delta), improves again and stalls for good
    val_loss = [2.0, 1.5, 1.4, 1.40005, 1.41, 1.39995, 1.45, 1.2, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3]
    val_accuracy = [0.2, 0.3, 0.35, 0.35, 0.34, 0.36, 0.36, 0.4, 0.4, 0.39, 0.4, 0.38, 0.4, 0.37, 0.4, 0.4, 0.4, 0.4]
    config = TrainConfig("r", lr_schedule="plateau", learning_rate=1e-2, lr_patience=2, lr_factor=0.5,
                         min_learning_rate=2e-3, stop_patience=5)
    ours_optimizer = tf.keras.optimizers.Adam(config.learning_rate)
    schedule = PlateauSchedule(config)
    ours_lr, ours_stop, ours_best = [], None, []
    for epoch, (loss, acc) in enumerate(zip(val_loss, val_accuracy)):
        improved, stop = schedule.update(epoch, loss, acc, ours_optimizer)
        ours_lr.append(float(ours_optimizer.learning_rate.numpy()))
        ours_best.append(schedule.state["best_epoch"])
        if stop:
            ours_stop = epoch
            break

    model = tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(1)])
    model.compile(tf.keras.optimizers.Adam(config.learning_rate), "mse")
    plateau = tf.keras.callbacks.ReduceLROnPlateau("val_loss", factor=config.lr_factor, patience=config.lr_patience,
                                                   min_lr=config.min_learning_rate, min_delta=1e-4)
    stopping = tf.keras.callbacks.EarlyStopping("val_accuracy", patience=config.stop_patience, mode="max")
    for callback in (plateau, stopping):
        callback.set_model(model)
        callback.on_train_begin()
    keras_lr, keras_stop = [], None
    for epoch, (loss, acc) in enumerate(zip(val_loss, val_accuracy)):
        logs = {"val_loss": loss, "val_accuracy": acc}
        plateau.on_epoch_end(epoch, logs)
        stopping.on_epoch_end(epoch, logs)
        keras_lr.append(float(model.optimizer.learning_rate.numpy()))
        if model.stop_training:
            keras_stop = epoch
            break

    np.testing.assert_allclose(ours_lr, keras_lr, rtol=1e-6)
    assert ours_stop == keras_stop == 12
    assert min(ours_lr) == np.float32(config.min_learning_rate)  # the floor was reached and held
    assert ours_best[-1] == 7  # the first epoch with the best accuracy (0.4) is the one kept


def test_cosine_schedule_never_stops_early():
    config = TrainConfig("r", lr_schedule="cosine", stop_patience=1)
    schedule = PlateauSchedule(config)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    stops = [schedule.update(e, 1.0, 0.5, optimizer)[1] for e in range(10)]
    assert not any(stops) and float(optimizer.learning_rate.numpy()) == np.float32(1e-3)


def test_a_state_saved_before_any_eligible_epoch_resumes(tmp_path):
    """A QCFS run checkpointed during its ReLU warm-up has no best loss yet: strict JSON writes that infinity as
    null, and the resumed schedule must still take the first quantised epoch as the best (it crashed on None)."""
    from snn4vision.checkpoints import atomic_write_json, read_json

    config = TrainConfig("r", lr_schedule="cosine")
    warm_up = PlateauSchedule(config)
    assert warm_up.update(5, 0.9, 0.6, None, eligible=False) == (False, False)
    atomic_write_json(tmp_path / "state.json", warm_up.state)
    saved = read_json(tmp_path / "state.json")
    assert saved["best_val_loss"] is None
    resumed = PlateauSchedule(config, saved)
    assert resumed.update(76, 1.3, 0.75, tf.keras.optimizers.Adam(1e-3)) == (True, False)
    assert resumed.state["best_val_loss"] == 1.3 and resumed.state["best_epoch"] == 76


def test_divergence_is_a_non_finite_or_exploded_loss():
    from snn4vision.evaluation import diverging

    bound = 100 * np.log(4)  # 138.6: 100 x the loss of guessing among 4 classes
    assert not diverging(4, 1.5, 2.0) and not diverging(4, 138.0)
    assert diverging(4, 139.0) and diverging(4, 1.0, 8.7e13)  # SGD at lr 1e3 after one epoch: finite, exploded
    assert diverging(4, float("nan")) and diverging(4, 1.0, float("inf"))
    assert bound < 139.0


def test_the_quick_preset_penalises_spikes_of_qcfs_networks_only():
    from snn4vision import cli

    def sparsity(*flags):
        return cli.train_config(cli.train_ann_parser().parse_args(["--run", "r", *flags])).sparsity

    assert sparsity("--activation", "qcfs") == 2.0  # measured: benchmarks/results/cross_validation.md
    assert sparsity("--activation", "qcfs", "--preset", "full") == 1.0  # the full preset: not measured
    assert sparsity() == 0.0 and sparsity("--activation", "relu") == 0.0  # not measured for ReLU networks
    assert sparsity("--sparsity", "0.5") == 0.5 and sparsity("--activation", "qcfs", "--sparsity", "0") == 0.0
    assert sparsity("--activation", "qcfs", "--preset", "paper") == 0.0

import json

import numpy as np
import pytest
import tensorflow as tf

from snn4vision import checkpoints, rundir
from snn4vision.errors import UserError


def _model(units=4, seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(units), tf.keras.layers.Dense(2)])
    model.compile(tf.keras.optimizers.Adam(0.1), "mse")
    return model


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    checkpoints.atomic_write_json(tmp_path / "a.json", {"x": 1})
    checkpoints.atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    checkpoints.atomic_write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        checkpoints.atomic_write_json(tmp_path / "a.json", {"x": object()})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_epoch_checkpointer_restores_model_and_optimizer(tmp_path):
    x = np.ones((8, 3), np.float32)
    y = np.zeros((8, 2), np.float32)
    model = _model()
    model.fit(x, y, epochs=3, verbose=0)
    saver = checkpoints.EpochCheckpointer(tmp_path, model=model, optimizer=model.optimizer)
    saver.save(2, {"note": "hello"}, best_weights_of=model)
    saver.save(3, {"note": "again"})
    fresh = _model(seed=1)
    fresh.optimizer.build(fresh.trainable_variables)
    state = checkpoints.EpochCheckpointer(tmp_path, model=fresh, optimizer=fresh.optimizer).restore()
    assert state["note"] == "again" and state["step"] == 3
    assert state["best_weights"] == "step-000002.best.weights.h5"
    assert int(fresh.optimizer.iterations.numpy()) == 3
    for a, b in zip(model.weights + model.optimizer.variables, fresh.weights + fresh.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "step-000002.best.weights.h5", "step-000003"]


def test_checkpoint_of_another_model_is_refused(tmp_path):
    model = _model(units=4)
    model.optimizer.build(model.trainable_variables)
    checkpoints.EpochCheckpointer(tmp_path, model=model, optimizer=model.optimizer).save(0, {})
    other = _model(units=5)
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(UserError, match="does not fit"):
        checkpoints.EpochCheckpointer(tmp_path, model=other, optimizer=other.optimizer).restore()


def test_run_dir_refuses_to_overwrite(tmp_path):
    (tmp_path / rundir.CONFIG).write_text("{}")
    with pytest.raises(UserError, match="--overwrite"):
        rundir.prepare_new(tmp_path, [rundir.CONFIG], resume=False, overwrite=False)
    rundir.prepare_new(tmp_path, [rundir.CONFIG], resume=False, overwrite=True)
    assert not (tmp_path / rundir.CONFIG).exists()


def test_require_names_missing_file_and_stage(tmp_path):
    with pytest.raises(UserError, match=r"no ann.weights.h5: run pipelines/train_ann.py"):
        rundir.require(tmp_path, rundir.ANN_WEIGHTS)


def test_keras_check_accepts_tf_keras_after_keras_spiking_import():
    import keras_spiking  # noqa: F401  (renames tf.keras.__name__ to "tensorflow.keras")

    from snn4vision.errors import check_keras

    check_keras()
    assert tf.keras.layers.Dense.__module__.startswith("tf_keras")

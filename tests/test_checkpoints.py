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


def _full_disk(*args):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("write", [
    lambda path: checkpoints.atomic_write_json(path, {"x": 2}),
    lambda path: checkpoints.atomic_save_weights(_model(seed=5), path),
])
def test_a_write_that_fails_before_the_rename_leaves_the_old_file_whole(tmp_path, monkeypatch, write):
    """A full disk (or a kill) before the final rename: the old file is untouched and no temporary is left."""
    path = tmp_path / "out.weights.h5"
    path.write_bytes(b"old contents")
    monkeypatch.setattr(checkpoints.os, "fsync", _full_disk)
    with pytest.raises(OSError, match="No space left"):
        write(path)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.weights.h5"]


def test_a_failed_commit_keeps_the_previous_checkpoint_restorable(tmp_path, monkeypatch):
    """The old step's files go only after state.json names the new step."""
    model = _model()
    model.optimizer.build(model.trainable_variables)
    saver = checkpoints.EpochCheckpointer(tmp_path, model=model, optimizer=model.optimizer)
    saver.save(1, {"epoch": 1})
    saved = [w.numpy().copy() for w in model.weights]
    for w in model.weights:
        w.assign(w + 1.0)
    monkeypatch.setattr(checkpoints, "atomic_write_json", lambda *a: _full_disk())
    with pytest.raises(OSError):
        saver.save(2, {"epoch": 2}, best_weights_of=model)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "step-000001"]  # step 2's files are gone
    state = checkpoints.EpochCheckpointer(tmp_path, model=model, optimizer=model.optimizer).restore()
    assert state["epoch"] == 1
    for a, b in zip(saved, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


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


def test_json_is_strict_and_names_non_finite_values(tmp_path):
    """NaN and infinity are not JSON: they are written as null and listed under "non_finite"."""
    path = tmp_path / "m.json"
    checkpoints.atomic_write_json(path, {"loss": float("nan"), "history": [{"val": 1.0}, {"val": float("inf")}], "ok": 2})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert loaded["loss"] is None and loaded["history"][1]["val"] is None and loaded["ok"] == 2
    assert loaded["non_finite"] == ["loss", "history[1].val"]
    checkpoints.atomic_write_json(path, {"fine": 1.5})
    assert "non_finite" not in json.loads(path.read_text())


@pytest.mark.slow  # a fresh interpreter that imports TensorFlow: about 4 s
def test_a_second_process_is_refused_a_locked_run_directory(tmp_path):
    """The lock is held by this process; another process fails at once, naming our PID; nesting is allowed."""
    import os
    import subprocess
    import sys

    probe = ("import sys; from snn4vision import rundir; from snn4vision.errors import UserError\n"
             "try:\n    with rundir.locked(sys.argv[1]): print('acquired')\n"
             "except UserError as e: print(e)\n")
    with rundir.locked(tmp_path):
        with rundir.locked(tmp_path):  # run_all holds it across its stages
            pass
        other = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                               timeout=60)
        assert other.stdout.strip() == (f"{tmp_path} is in use by process {os.getpid()} (another stage or run "
                                        "writing into it): wait for it to finish, or choose another --run directory")
    released = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                              timeout=60)
    assert released.stdout.strip() == "acquired"


def test_run_directory_that_is_a_file_or_read_only(tmp_path):
    import os

    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(UserError, match=r"is a file, not a run directory: pass a directory"):
        rundir.require(a_file, rundir.CONFIG)
    with pytest.raises(UserError, match=r"is a file, not a run directory"):
        rundir.prepare_new(a_file, [rundir.CONFIG], False, False)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if os.access(read_only, os.W_OK):
            pytest.skip("running as a user that may write anywhere")
        with pytest.raises(UserError, match="is read-only"):
            rundir.prepare_new(read_only, [rundir.CONFIG], False, False)
    finally:
        read_only.chmod(0o700)


def _tree(root):
    """Every file under ``root`` (the lock file aside) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK}


def _finished_stages(run_dir):
    for name in ("config.json", "ann.weights.h5", "snn.json", "conversion.json", "energy.json", "summary.md"):
        (run_dir / name).write_text(f"old {name}")
    (run_dir / "checkpoints" / "fine_tune").mkdir(parents=True)
    (run_dir / "checkpoints" / "fine_tune" / "state.json").write_text("old state")


def test_overwrite_that_fails_restores_everything(tmp_path):
    _finished_stages(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(UserError, match="typo"):
        with rundir.replacing(tmp_path):
            rundir.prepare_new(tmp_path, [rundir.SNN_CONFIG, rundir.CONVERSION], False, True, stage="convert")
            assert not (tmp_path / "conversion.json").exists() and not (tmp_path / "energy.json").exists()
            (tmp_path / "snn.json").write_text("new, incomplete")
            raise UserError("data folder /typo does not exist")
    assert _tree(tmp_path) == before


def test_overwrite_that_succeeds_moves_later_stages_to_stale(tmp_path, capsys):
    _finished_stages(tmp_path)
    with rundir.replacing(tmp_path):
        rundir.prepare_new(tmp_path, [rundir.SNN_CONFIG, rundir.CONVERSION], False, True, stage="convert")
        (tmp_path / "snn.json").write_text("new")
    after = _tree(tmp_path)
    stale = [name for name in after if name.startswith("stale/")]
    stamp = stale[0].split("/")[1]
    # the conversion's own old outputs are gone; what was made from them (fine-tuning, energy, summary) is kept
    assert sorted(stale) == sorted(f"stale/{stamp}/{n}" for n in ("checkpoints/fine_tune/state.json", "energy.json",
                                                                   "summary.md"))
    assert after["snn.json"] == b"new" and "conversion.json" not in after
    assert after["config.json"] == b"old config.json" and after["ann.weights.h5"] == b"old ann.weights.h5"
    assert f"moved the outputs made from the replaced ones to {tmp_path / 'stale' / stamp}" in capsys.readouterr().out


def test_a_truncated_weights_file_is_called_damaged_not_another_model(tmp_path):
    model = _model()
    path = tmp_path / "ann.weights.h5"
    checkpoints.atomic_save_weights(model, path)
    with pytest.raises(UserError, match="do not fit the model"):
        checkpoints.load_weights(_model(units=5), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for load in (checkpoints.load_weights, checkpoints.load_variables):
        with pytest.raises(UserError, match=r"ann.weights.h5 is damaged or incomplete \(.*truncated.*--overwrite$"):
            load(model, path) if load is checkpoints.load_weights else load(model.weights, path)

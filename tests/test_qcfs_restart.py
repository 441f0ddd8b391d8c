"""--qcfs-restart: the ReLU warm-up spends a cosine of its own, and the quantised epochs restart one."""
import math
import re

import pytest

from snn4vision import cli
from snn4vision.errors import UserError
from snn4vision.rundir import TrainConfig
from snn4vision.rundir import config as config_module


def _cosine(top, low, k, n):
    return low + (top - low) * 0.5 * (1 + math.cos(math.pi * k / n))


def test_each_epoch_of_a_restarted_schedule_by_hand():
    """9 epochs, one warm-up epoch, quantised from epoch 4 (0-based; qcfs_warmup 0.5), restart 0.25: epoch 0 at
    lr / 2; epochs 1-3 a cosine from lr that reaches the minimum at epoch 3, the warm-up's last; epochs 4-8 a
    cosine from lr / 4 that reaches the minimum at epoch 8, the run's last."""
    lr, low = 4e-3, 1e-5
    config = TrainConfig("r", activation="qcfs", levels=2, learning_rate=lr, min_learning_rate=low,
                         warmup_epochs=1, epochs=9, qcfs_warmup=0.5, qcfs_restart=0.25)
    config.validate()
    assert config.qcfs_from_epoch == 4
    expected = [lr / 2, lr, _cosine(lr, low, 1, 2), low, 1e-3, _cosine(1e-3, low, 1, 4), _cosine(1e-3, low, 2, 4),
                _cosine(1e-3, low, 3, 4), low]
    assert [config.learning_rate_at(e) for e in range(9)] == pytest.approx(expected, rel=1e-12)


def test_without_a_restart_one_cosine_spans_every_epoch():
    # the default: the quantised epochs carry on down the one cosine, from where the warm-up left it
    config = TrainConfig("r", activation="qcfs", levels=2, learning_rate=4e-3, min_learning_rate=1e-5,
                         warmup_epochs=1, epochs=9, qcfs_warmup=0.5)
    assert [config.learning_rate_at(e) for e in range(1, 9)] == pytest.approx(
        [_cosine(4e-3, 1e-5, k, 8) for k in range(8)], rel=1e-12)


def test_the_flag_reaches_the_config_and_old_configs_read_as_no_restart(tmp_path):
    args = cli.train_ann_parser().parse_args(["--run", str(tmp_path / "r"), "--activation", "qcfs",
                                              "--qcfs-restart", "0.15"])
    assert cli.train_config(args).qcfs_restart == 0.15
    saved = TrainConfig("r", activation="qcfs", levels=2, qcfs_restart=0.15).to_json()
    assert saved.pop("qcfs_restart") == 0.15
    assert TrainConfig.from_json(saved).qcfs_restart == 0.0  # a run written before the flag did not restart


@pytest.mark.parametrize("changes, message", [
    (dict(activation="relu", levels=4), "--qcfs-restart restarts the cosine schedule"),
    (dict(qcfs_warmup=0.0), "--qcfs-restart restarts the cosine schedule"),
    (dict(lr_schedule="plateau"), "--qcfs-restart restarts the cosine schedule"),
    (dict(qcfs_restart=-0.1), "--qcfs-restart must be in [0, 1]"),
    (dict(qcfs_restart=1.5), "--qcfs-restart must be in [0, 1]"),
    (dict(qcfs_restart=math.nan), "--qcfs-restart must be in [0, 1]"),
])
def test_a_restart_without_a_warm_up_to_end_is_refused(changes, message):
    config = TrainConfig("r", **{"activation": "qcfs", "levels": 2, "qcfs_restart": 0.1, **changes})
    with pytest.raises(UserError, match=re.escape(message)):
        config.validate()


def test_a_preset_with_a_restart_drops_it_where_nothing_restarts(monkeypatch):
    """A ReLU network, QCFS from the start, or the plateau schedule has no warm-up's cosine to end: from_preset
    turns a preset's restart off there (validate would refuse it), keeps it for a QCFS network with a warm-up,
    and takes a caller's value as given."""
    monkeypatch.setitem(config_module.PRESETS, "quick", dict(config_module.PRESETS["quick"], qcfs_restart=0.15))
    kept = TrainConfig.from_preset("quick", run_dir="r", activation="qcfs")
    kept.validate()
    assert kept.qcfs_restart == 0.15
    for changes in (dict(activation="relu"), dict(activation="qcfs", qcfs_warmup=0.0),
                    dict(activation="qcfs", lr_schedule="plateau")):
        config = TrainConfig.from_preset("quick", run_dir="r", **changes)
        config.validate()
        assert config.qcfs_restart == 0.0, changes
    given = TrainConfig.from_preset("quick", run_dir="r", activation="relu", qcfs_restart=0.15)
    assert given.qcfs_restart == 0.15
    with pytest.raises(UserError, match="--qcfs-restart restarts the cosine schedule"):
        given.validate()

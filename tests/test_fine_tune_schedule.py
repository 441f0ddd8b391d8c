"""The snn4space recipe's bounds on dt and tau, by hand."""
import math

import pytest

from snn4vision import cli
from snn4vision.errors import UserError
from snn4vision.stages.fine_tuning import RECIPES, FineTuneConfig, _dt_bounds, dt_ceiling, schedule, tau_ceiling
from snn4vision.layer_graph import vgg_graph_spec
from snn4vision.simulation import SpikingNetwork


def _recipe(**changes) -> FineTuneConfig:
    return FineTuneConfig("run", **(RECIPES["snn4space"] | changes))


def test_dt_ceiling_falls_geometrically_to_the_floor_when_the_last_stage_starts():
    config = _recipe()  # T = 32: stages T = 1 ... 32, six of them; dt decays over the first five
    assert len(schedule(config)) == 6
    assert dt_ceiling(config, 1.0, 0, 0.0) == pytest.approx(1.0)
    assert dt_ceiling(config, 1.0, 2, 0.5) == pytest.approx(10 ** -1.5)  # half way: 2.5 of 5 stages
    assert dt_ceiling(config, 1.0, 5, 0.0) == pytest.approx(1e-3)
    assert dt_ceiling(config, 1.0, 5, 1.0) == pytest.approx(1e-3)  # never below the floor
    one_stage = _recipe(timesteps=1)
    assert dt_ceiling(one_stage, 1.0, 0, 0.5) == pytest.approx(10 ** -1.5)  # one stage: floor at its end
    assert dt_ceiling(_recipe(dt_decay="none"), 1.0, 3, 0.5) == 1.0


def test_tau_ceiling_follows_dt_on_a_log_log_line():
    config = _recipe()  # (1 s, 0.1 s) to (1 ms, 1 ms): tau ~ dt^(2/3)
    assert tau_ceiling(config, 1.0, 0.1, 1.0) == pytest.approx(0.1)
    assert tau_ceiling(config, 1.0, 0.1, 1e-3) == pytest.approx(1e-3)
    assert tau_ceiling(config, 1.0, 0.1, 0.1) == pytest.approx(0.1 * 0.1 ** (2 / 3))
    # filter smoothing per step exp(-dt / tau): transparent at the start, e^-1 at the floor
    assert math.exp(-1.0 / tau_ceiling(config, 1.0, 0.1, 1.0)) < 1e-4
    assert tau_ceiling(_recipe(tau_min=None), 1.0, 0.1, 1e-3) == 0.1


def test_dt_and_tau_are_bounded_after_every_optimizer_step():
    config = _recipe()
    snn = SpikingNetwork(vgg_graph_spec([2, 2], [False, False], 3, 4), dt=1.0, tau=0.1, train_dt=True)
    bounds = _dt_bounds(snn, config, 1.0, stage=0, epoch=1, epochs=4, steps=5)
    snn.dt_weight.assign(2.0)  # an optimizer step above the ceiling after batch 3 of 5, epoch 2 of 4, stage T = 1
    bounds.on_train_batch_end(2)
    ceiling = dt_ceiling(config, 1.0, 0, (1 + 3 / 5) / 4)
    assert float(snn.dt_weight.numpy()) == pytest.approx(ceiling)
    assert max(float(t.numpy().max()) for t in snn.taus) == pytest.approx(tau_ceiling(config, 1.0, 0.1, ceiling))
    snn.dt_weight.assign(5e-4)  # below the floor
    bounds.on_train_batch_end(3)
    assert float(snn.dt_weight.numpy()) == pytest.approx(1e-3)
    assert max(float(t.numpy().max()) for t in snn.taus) == pytest.approx(1e-3)


def test_recipe_flags_override_the_recipe_and_bad_combinations_are_refused():
    args = cli.fine_tune_parser().parse_args(["--run", "r", "--recipe", "snn4space", "--epochs", "2",
                                              "--no-train-tau"])
    config = cli.fine_tune_config(args)
    assert (config.epochs, config.train_tau, config.optimizer, config.dt_min) == (2, False, "rmsprop", 1e-3)
    plain = cli.fine_tune_config(cli.fine_tune_parser().parse_args(["--run", "r"]))
    assert (plain.timesteps, plain.optimizer, plain.train_dt, plain.dt_min) == (8, "adam", False, None)
    for bad, message in [(dict(train_dt=False), "--train-dt"), (dict(dt_min=None), "--dt-min"),
                         (dict(optimizer="sgd"), "--optimizer"), (dict(rate_l2=-1.0), "--rate-l2")]:
        with pytest.raises(UserError, match=message):
            _recipe(**bad).validate()
    with pytest.raises(UserError, match="converted at 0.001 s: run convert_snn.py --dt 1 --tau 0.1 --max-rate 4000"):
        _recipe(recipe="snn4space").check_snn(0.001, 0.1, "keras_spiking")
    with pytest.raises(UserError, match="integrate-and-fire"):
        _recipe(tau_min=None).check_snn(1.0, None, "signed_if")

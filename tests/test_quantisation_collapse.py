"""A QCFS training that collapses when it begins to quantise says so (evaluation.quantisation_record): on the
5-fold cross-validation a spike penalty of 4 at L = 4 fell from 86.2 % to 49.7 % on one fold, silently."""
import json
from types import SimpleNamespace

import pytest
import tensorflow as tf

from snn4vision import evaluation, pipeline
from snn4vision.rundir import TrainConfig
from snn4vision.stages import training

from .conftest import make_subset
from .test_untested_behaviours_training import small_qcfs_model


def _history(values):
    return [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate(values)]


def test_the_collapsed_fold_is_named_with_its_figures_and_the_flag_to_lower():
    """The measured fold (l4s4, fold 1; 130 epochs, quantised from epoch 98): the warm-up's last epoch (97) is
    the reference, not its best epoch (95), and the best quantised epoch is the one kept."""
    values = [0.5] * 94 + [0.884, 0.870, 0.862] + [0.339, 0.497, 0.481] + [0.45] * 30
    record = evaluation.quantisation_record(_history(values), 97, 4.0)
    assert (record["warmup_val_accuracy"], record["quantised_val_accuracy"]) == (0.862, 0.497)
    assert record["warning"] == ("the quantised network's best validation accuracy, 49.7 %, is 36.5 points under "
                                 "the 86.2 % its ReLU warm-up ended with: it collapsed when it began to quantise "
                                 "(epoch 98); train again with a lower --sparsity (it is 4)")


def test_without_a_penalty_the_fix_is_more_levels():
    record = evaluation.quantisation_record(_history([0.9, 0.5]), 1, 0.0)
    assert record["warning"].endswith("train again with more --levels")


@pytest.mark.parametrize("before, after, warned", [
    (0.9, 0.8, True),  # exactly 10 points (9.999... in floating point)
    (0.9, 0.8001, False),
    (0.926, 0.889, False),  # the largest drop of a healthy cross-validation training (3.7 points, --qcfs-warmup 0.85)
    (0.862, 0.931, False),  # quantising gained
])
def test_the_bound_is_ten_points(before, after, warned):
    record = evaluation.quantisation_record(_history([0.1, before, after]), 2, 2.0)
    assert (record["warning"] is not None) == warned


@pytest.mark.parametrize("history, first", [
    (_history([0.9, 0.5]), 0),  # no warm-up (QCFS from the start, or a ReLU network)
    (_history([0.9, 0.85]), 2),  # stopped before any quantised epoch
    (_history([0.9])[1:], 1),  # nothing recorded
])
def test_no_record_without_a_warm_up_and_a_quantised_epoch(history, first):
    assert evaluation.quantisation_record(history, first, 2.0) is None


def test_the_summary_carries_the_warning_above_its_tables():
    summary = {"run": "r", "ann_test_accuracy": 0.5, "snn": "s", "converted": [], "fine_tuned": None,
               "energy": {"model": "converted", "timesteps": 1, "snn_test_accuracy": 0.5, "spikes_per_neuron": 0.1,
                          "sop_per_mac": 0.4, "devices": {"loihi": {"ann_J": 2.0, "snn_J": 1.0, "snn_over_ann": 0.5}}},
               "wall_time_s": {}}
    assert "Warning" not in pipeline.format_summary(summary | {"training_warning": None})
    text = pipeline.format_summary(summary | {"training_warning": "it collapsed"})
    assert text.index("**Warning:** it collapsed") < text.index("| model | T |")


@pytest.mark.slow  # a 3-epoch training: about 5 s
def test_training_records_the_comparison_and_warns(tmp_path, monkeypatch, capsys):
    """3 epochs, the first a ReLU warm-up: metrics.json compares epoch 1 with the best of epochs 2 and 3; with
    the bound lowered below any drop, the warning reaches stderr."""
    subset = make_subset(tmp_path / "data", ["beach", "forest", "runway"], 10)
    config = TrainConfig(str(tmp_path / "run"), dataset=str(subset), image_size=16, width=0.125, batch_size=16,
                         epochs=3, learning_rate=1e-3, warmup_epochs=1, augment="none", activation="qcfs",
                         levels=2, qcfs_warmup=0.34, kernel_l2=0.0, bias_l1=0.0, sparsity=3.0)
    monkeypatch.setattr(training, "build_model", small_qcfs_model)
    monkeypatch.setattr(evaluation, "COLLAPSE_POINTS", -100)
    metrics = training.train_ann(config, verbose=False)
    val = [e["val_accuracy"] for e in metrics["history"]]
    record = metrics["quantisation"]
    assert (record["warmup_val_accuracy"], record["quantised_val_accuracy"]) == (val[0], max(val[1:]))
    assert "(epoch 2); train again with a lower --sparsity (it is 3)" in record["warning"]
    assert f"warning: {record['warning']}" in capsys.readouterr().err
    tf.keras.backend.clear_session()


def test_the_summary_reads_the_warning_from_metrics(tmp_path, monkeypatch):
    """summarise takes the training's warning from metrics.json (None for runs from before the record)."""
    files = {"conversion.json": {"ann_test_accuracy": 0.5, "variants": [{"name": "s", "by_timesteps": [
                 {"timesteps": 1, "accuracy": 0.5, "spikes_per_image": 10.0}]}]},
             "energy.json": {"model": "converted", "timesteps": 1, "snn_test_accuracy": 0.5, "spikes_per_image": 10.0,
                             "devices": [], "summary": {"loihi": {"ann_J": 2.0, "snn_J": 1.0, "snn_over_ann": 0.5}}}}
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    monkeypatch.setattr(pipeline, "load_snn", lambda run_dir: SimpleNamespace(neurons_per_layer=lambda: [10]))
    metrics = {"test": {"accuracy": 0.5}, "wall_time_s": 1.0}
    for record, wanted in ((None, None), ({"warning": None}, None), ({"warning": "it collapsed"}, "it collapsed")):
        (tmp_path / "metrics.json").write_text(json.dumps(metrics | ({"quantisation": record} if record else {})))
        assert pipeline.summarise(tmp_path)["training_warning"] == wanted

"""Cross-validation statistics against scipy (an independent reference) and fold runs written by hand."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from snn4vision import crossval
from snn4vision.errors import UserError


def test_intervals_match_scipy():
    values = [0.905, 0.881, 0.929, 0.893, 0.912]
    ours = crossval.mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert ours["mean"] == pytest.approx(np.mean(values))
    assert (ours["low"], ours["high"]) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))
    for dof in (1, 4, 9, 30):
        assert crossval.t975(dof) == pytest.approx(stats.t.ppf(0.975, dof), abs=1e-3)
    wilson = stats.binomtest(1890, 2100).proportion_ci(0.95, method="wilson")
    ours = crossval.wilson_interval(1890, 2100)
    assert (ours["low"], ours["high"]) == (pytest.approx(wilson.low, abs=1e-6), pytest.approx(wilson.high, abs=1e-6))


def _fold(root, name, fold, test, ann, snn=None, loihi=None, seed=0, folds=3):
    run = root / f"{name}{fold}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"folds": folds, "fold": fold, "seed": seed}))
    (run / "split.json").write_text(json.dumps({"test": [[item, 0] for item in test]}))
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": ann}}))
    if snn is not None:
        energy = {"snn_test_accuracy": snn, "timesteps": 1,
                  "devices": {"loihi": {"snn_over_ann": loihi}, "gpu": {"snn_over_ann": 1.0}}}
        (run / "summary.json").write_text(json.dumps({"energy": energy}))
    return run


def test_a_setting_is_summarised_over_its_folds_and_paired_with_another(tmp_path):
    tests = [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j"]]  # 10 images, each tested once
    snn = [_fold(tmp_path, "snn", i, tests[i], ann, s, e)
           for i, (ann, s, e) in enumerate([(0.75, 0.5, 0.4), (1.0, 1.0, 0.5), (0.5, 0.5, 0.3)])]
    relu = [_fold(tmp_path, "relu", i, tests[i], ann) for i, ann in enumerate([1.0, 1.0, 1.0])]
    summary = crossval.summarise(snn)
    assert summary["images"] == 10
    assert summary["pooled"]["ann"]["mean"] == pytest.approx(8 / 10)  # 3 + 4 + 1 of 10 right
    assert summary["pooled"]["snn"]["mean"] == pytest.approx(7 / 10)  # 2 + 4 + 1
    gap = [-0.25, 0.0, 0.0]
    assert summary["fold_mean"]["gap"]["mean"] == pytest.approx(np.mean(gap))
    half = stats.t.ppf(0.975, 2) * np.std(gap, ddof=1) / np.sqrt(3)
    assert summary["fold_mean"]["gap"]["high"] == pytest.approx(np.mean(gap) + half, abs=1e-3)
    assert summary["energy"]["loihi"]["mean"] == pytest.approx(0.4)
    assert list(crossval.summarise(relu)["fold_mean"]) == ["ann"]  # an ANN-only setting
    paired = crossval.compare(snn, relu)
    assert paired["ann"]["mean"] == pytest.approx(np.mean([-0.25, 0.0, -0.5]))
    assert paired["snn_vs_ann"]["mean"] == pytest.approx(np.mean([-0.5, 0.0, -0.5]))
    assert "snn" not in paired and paired["energy"] == {}


def test_incomplete_or_mismatched_folds_are_refused_in_one_line(tmp_path):
    runs = [_fold(tmp_path, "a", i, [f"x{i}"], 0.5) for i in (0, 2)]
    with pytest.raises(UserError, match=r"need folds 0 \.\. 2 once each, have \[0, 2\] \(missing \[1\]\)"):
        crossval.summarise(runs)
    mixed = runs + [_fold(tmp_path, "a", 1, ["x1"], 0.5, seed=1)]
    with pytest.raises(UserError, match="mix --folds/--seed"):
        crossval.summarise(mixed)
    same = [_fold(tmp_path, "b", i, [f"x{i}"], 0.5) for i in range(3)]
    other = [_fold(tmp_path, "c", i, [f"y{i}"], 0.5) for i in range(3)]
    with pytest.raises(UserError, match="not tested on the same folds"):
        crossval.compare(same, other)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(UserError, match="not a cross-validation fold"):
        crossval.summarise([plain])


def test_a_setting_kept_in_a_results_file_reports_and_pairs_as_its_runs_did(tmp_path):
    """Run directories get lost with machines: the fold records a report keeps (``per_fold``) give back the same
    summary, pair with runs still on disk, and are paired only on the same test images (their digest)."""
    tests = [["a", "b"], ["c", "d"], ["e", "f", "g"]]
    runs = [_fold(tmp_path / "runs", "f", i, tests[i], ann, s, e)
            for i, (ann, s, e) in enumerate([(0.5, 0.5, 0.4), (1.0, 0.5, 0.5), (2 / 3, 2 / 3, 0.3)])]
    relu = [_fold(tmp_path / "relu", "f", i, tests[i], 1.0) for i in range(3)]
    from_runs = crossval.summarise(runs)
    kept = tmp_path / "results.json"
    kept.write_text(json.dumps({"settings": {"default": from_runs}}))
    records = crossval.gather(f"{kept}#default")
    assert [r["run"] for r in records] == [str(r) for r in runs]
    assert crossval.summarise(records) == from_runs
    assert crossval.gather(tmp_path / "runs") == crossval.gather(f"{kept}#default")
    assert crossval.compare(records, relu) == crossval.compare(runs, relu)
    assert crossval.test_digest(["b", "a"]) == crossval.test_digest(["a", "b"]) != crossval.test_digest(["a", "c"])
    moved = [dict(r) for r in records]
    moved[2]["test_digest"] = crossval.test_digest(["e", "f", "h"])  # another image in fold 2
    with pytest.raises(UserError, match="not tested on the same folds"):
        crossval.compare(moved, relu)


def test_a_results_file_that_cannot_give_a_setting_is_refused_in_one_line(tmp_path):
    kept = tmp_path / "results.json"
    with pytest.raises(UserError, match="does not exist"):
        crossval.gather(f"{kept}#default")
    old = {"fold": 0, "ann": 0.9, "snn": 0.9, "gap": 0.0, "energy": None, "timesteps": 1, "run": "r"}
    kept.write_text(json.dumps({"settings": {"default": {"per_fold": [old]}}}))
    with pytest.raises(UserError, match="has no setting 'relu': it has default"):
        crossval.gather(f"{kept}#relu")
    with pytest.raises(UserError, match="gathered before their records kept folds, seed, test_digest, test_images"):
        crossval.gather(f"{kept}#default")
    with pytest.raises(UserError, match="is not a folder of fold runs"):
        crossval.gather(tmp_path / "nowhere")


def test_the_report_command_names_a_bad_setting_in_one_line(tmp_path):
    """benchmarks/cross_validation.py report: a --setting without a source, or one its file lacks, is one line
    (exit status 1), no traceback, and nothing written."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cross_validation.py"
    kept = tmp_path / "results.json"
    kept.write_text(json.dumps({"settings": {}}))
    for setting, message in ((str(tmp_path), "names no source: give NAME=RUNS_DIR or NAME=FILE.json#SETTING"),
                             (f"default={kept}#default", "has no setting 'default': it has none")):
        done = subprocess.run([sys.executable, str(script), "report", "--setting", setting], capture_output=True,
                              text=True)
        assert done.returncode == 1 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr

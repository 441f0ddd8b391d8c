"""A run directory is ours or it is refused: what --overwrite may move, where outputs may land, what --resume runs
on, and what an interrupted --overwrite leaves behind (issue 33)."""
import dataclasses
import json
import subprocess
import sys

import pytest

from snn4vision import cli, pipeline, report_pages, rundir
from snn4vision.stages import report
from snn4vision.errors import UserError
from snn4vision.stages.export import ExportConfig, export_nir
from snn4vision.pipeline import PipelineConfig, run_all
from snn4vision.rundir import TrainConfig
from snn4vision.stages.training import TRAIN_OUTPUTS

from .conftest import ROOT


def _tree(root):
    """Every file under ``root`` (the lock file aside) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK}


def _finished_run(run_dir):
    """Stand-ins for every stage's files (their bytes are what matters here)."""
    for name in ("config.json", "split.json", "classes.json", "ann.weights.h5", "metrics.json", "snn.json",
                 "snn.weights.h5", "conversion.json", "energy.json", "snn.nir", "nir_export.json"):
        (run_dir / name).write_text(f"old {name}")
    (run_dir / "checkpoints" / "ann").mkdir(parents=True)
    (run_dir / "checkpoints" / "ann" / "state.json").write_text("old state")
    return _tree(run_dir)


# --- 1. only what the project wrote is ever moved or deleted --------------------------------------------------
def test_overwrite_refuses_a_folder_holding_the_users_own_files(tmp_path):
    """The probe's folder: the user's model and logs under checkpoints/ and tensorboard/. Neither with nor without
    --overwrite is anything moved, and the refusal never suggests --overwrite."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "my_model.pt").write_bytes(b"user weights")
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events.user").write_bytes(b"user logs")
    before = _tree(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(UserError) as refused:
            with rundir.replacing(tmp_path):
                rundir.prepare_new(tmp_path, TRAIN_OUTPUTS, False, overwrite, stage="train")
        message = str(refused.value)
        assert "checkpoints/my_model.pt, tensorboard/events.user" in message and "--overwrite" not in message
        assert "\n" not in message
        assert _tree(tmp_path) == before and not (tmp_path / "stale").exists()


def test_overwrite_still_replaces_the_stages_own_folders(tmp_path):
    """The control: checkpoints/ann and tensorboard/ann are the training stage's, so --overwrite removes them."""
    (tmp_path / "checkpoints" / "ann").mkdir(parents=True)
    (tmp_path / "checkpoints" / "ann" / "state.json").write_text("old")
    (tmp_path / "tensorboard" / "ann").mkdir(parents=True)
    rundir.prepare_new(tmp_path, TRAIN_OUTPUTS, False, True, stage="train")
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "tensorboard").exists()


def test_a_later_stages_folder_with_foreign_files_is_not_moved_to_stale(tmp_path):
    """Re-training would move the report to stale/: a note of the user's in report/ stops it instead."""
    before = _finished_run(tmp_path)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "notes.txt").write_text("mine")
    before["report/notes.txt"] = b"mine"
    with pytest.raises(UserError, match=r"holds report/notes.txt, which this project did not write"):
        rundir.prepare_new(tmp_path, TRAIN_OUTPUTS, False, True, stage="train")
    assert _tree(tmp_path) == before


def test_the_report_folders_own_names_are_those_the_report_writes():
    assert set(rundir.OWN_CONTENTS[rundir.REPORT]) == set(report.OUTPUTS) | set(report_pages.FIGURES)


# --- 2. outputs never land on a run's own files ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["ann.weights.h5", "config.json", "nir_export.json", "checkpoints/ann/state.json"])
def test_export_refuses_an_out_that_is_one_of_the_runs_files(tmp_path, name):
    before = _finished_run(tmp_path)
    out = tmp_path / name
    with pytest.raises(UserError, match=rf"^--out {out} is {tmp_path}'s own {name}, which an export never replaces"):
        export_nir(ExportConfig(str(tmp_path), out=str(out)), overwrite=True, verbose=False)
    assert _tree(tmp_path) == before


def test_export_may_write_its_own_nir_file_in_the_run(tmp_path):
    """The default snn.nir passes the --out check: what stops this stand-in run is its unreadable snn.json."""
    _finished_run(tmp_path)
    with pytest.raises(UserError) as refused:
        export_nir(ExportConfig(str(tmp_path), out=str(tmp_path / "snn.nir")), overwrite=True, verbose=False)
    assert "never replaces" not in str(refused.value)


# --- 3. every stage's flags are checked before the first byte is written --------------------------------------
def _pipeline(run_dir, **settings):
    train = TrainConfig.from_preset("quick", run_dir=str(run_dir), dataset=str(run_dir / "data"),
                                    activation="qcfs", image_size=32, width=0.125, epochs=1, batch_size=16)
    return PipelineConfig(train, **settings)


@pytest.mark.parametrize("settings, problem", [
    ({"devices": ("tpu",)}, r"unknown device\(s\) tpu"),
    ({"max_timesteps": 1_000_000}, r"--timesteps 1000000 is above the largest supported T"),
    ({"timesteps": 1_000_000}, r"--timesteps 1000000 is above the largest supported T"),
])
def test_run_all_overwrite_refuses_a_later_stages_flag_before_training(tmp_path, settings, problem):
    before = _finished_run(tmp_path)
    with pytest.raises(UserError, match=problem):
        run_all(_pipeline(tmp_path, **settings), overwrite=True, verbose=False)
    assert _tree(tmp_path) == before


# --- 4. run_all never replaces a summary or report it did not write -------------------------------------------
@pytest.mark.parametrize("name", ["summary.md", "report/report.html"])
def test_run_all_refuses_a_summary_or_report_it_did_not_write(tmp_path, name):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text("the user's own")
    with pytest.raises(UserError, match=rf"already holds {name}, which run_all.py did not write"):
        run_all(_pipeline(tmp_path), verbose=False)
    assert _tree(tmp_path) == {name: b"the user's own"}


def test_a_run_from_before_the_records_keeps_its_own_summary_and_report_but_not_a_users(tmp_path):
    """Runs that run_all wrote before it recorded its results (provenance names config.json, config.json has no
    run_all record) resume: their summary and report begin as ours do. A file of the user's there is refused."""
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0, "extra": {}}))
    rundir.record_outputs(tmp_path, "train", ["config.json"], [])
    (tmp_path / "report").mkdir()
    (tmp_path / "summary.md").write_text(f"# Summary of {tmp_path}\n")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "report" / "report.html").write_text('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                                                      "<title>snn4vision: run comparison</title>")
    pipeline.check_results(tmp_path, resume=True, overwrite=False)
    (tmp_path / "summary.md").write_text("my notes")
    with pytest.raises(UserError, match=r"already holds summary.md, which run_all.py did not write: move it out"):
        pipeline.check_results(tmp_path, resume=True, overwrite=False)
    (tmp_path / "summary.md").unlink()
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0, "extra": {"run_all": {"path": "qcfs"}}}))
    rundir.record_outputs(tmp_path, "train", ["config.json"], [])
    with pytest.raises(UserError, match=r"summary.json, report/report.html, which run_all.py did not write"):
        pipeline.check_results(tmp_path, resume=True, overwrite=False)  # recorded: only what provenance names


def test_run_all_overwrite_keeps_a_foreign_summary_under_stale_and_replaces_its_own(tmp_path, capsys):
    (tmp_path / "summary.md").write_text("the user's own")
    (tmp_path / "summary.json").write_text("ours")
    rundir.record_outputs(tmp_path, "run_all", ["summary.json"], [])
    with pytest.raises(UserError, match=r"already holds summary.md, which run_all.py did not write"):
        pipeline.check_results(tmp_path, resume=False, overwrite=False)  # summary.json is ours: not named
    pipeline.check_results(tmp_path, resume=False, overwrite=True)
    kept = [p for p in (tmp_path / "stale").rglob("summary.md")]
    assert len(kept) == 1 and kept[0].read_text() == "the user's own"
    assert (tmp_path / "summary.json").read_text() == "ours"  # run_all's own: replaced by the run, not set aside
    assert "moved the earlier results that run_all.py did not write to" in capsys.readouterr().out


# --- 5. --resume runs on the recorded settings ----------------------------------------------------------------
def _recorded_relu_run(run_dir, settings=None):
    """A run of a ReLU ANN whose config.json records run_all's SETTINGS (default: the relu path's)."""
    train = TrainConfig.from_preset("quick", run_dir=str(run_dir), activation="relu", epochs=2, seed=5)
    train.extra = {"run_all": settings or {"path": "relu", "max_timesteps": 4, "timesteps": None,
                                           "devices": ["loihi"], "fine_tune_epochs": 1, "sweep": False}}
    (run_dir / "config.json").write_text(json.dumps(train.to_json()))


def _resumed(monkeypatch, argv):
    """The PipelineConfig that run_all.py --resume ARGV hands to the stages."""
    handed = []
    monkeypatch.setattr(pipeline, "_run_all", lambda config, *args: handed.append(config))
    parser = cli.run_all_parser()
    run_all(cli.run_all_config(parser.parse_args(argv), cli.explicit_flags(cli.run_all_parser(), argv)),
            resume=True, verbose=False)
    return handed[0]


def test_resume_without_flags_runs_on_the_recorded_settings(tmp_path, monkeypatch):
    _recorded_relu_run(tmp_path)
    config = _resumed(monkeypatch, ["--run", str(tmp_path), "--resume"])  # the defaults would be qcfs, T 8, ...
    assert (config.path, config.train.activation, config.max_timesteps, config.devices) == ("relu", "relu", 4,
                                                                                           ("loihi",))
    assert (config.train.epochs, config.train.seed, config.fine_tune_epochs, config.sweep) == (2, 5, 1, False)


def test_resume_accepts_flags_that_repeat_the_record_and_names_one_that_does_not(tmp_path, monkeypatch):
    _recorded_relu_run(tmp_path)
    config = _resumed(monkeypatch, ["--run", str(tmp_path), "--resume", "--path", "relu", "--epochs", "2"])
    assert config.max_timesteps == 4
    with pytest.raises(UserError, match=r"^--epochs 3 differs from the setting of the run being resumed, 2 "):
        _resumed(monkeypatch, ["--run", str(tmp_path), "--resume", "--epochs", "3"])
    with pytest.raises(UserError, match=r"^--timesteps 8 differs from the setting of the run being resumed, 4 "):
        _resumed(monkeypatch, ["--run", str(tmp_path), "--resume", "--timesteps", "8"])


def test_run_all_script_names_a_conflicting_flag_of_a_resume_in_one_line(tmp_path):
    _recorded_relu_run(tmp_path)
    before = _tree(tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "pipelines" / "run_all.py"), "--run", str(tmp_path),
                             "--resume", "--devices", "gpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: --devices gpu differs from the setting of the run being resumed, "
                                          f"loihi ({tmp_path / 'config.json'}): drop --devices to resume with the "
                                          "recorded settings, or start again with --overwrite"]
    assert _tree(tmp_path) == before


# --- 6. an interrupted --overwrite is undone by the next command ---------------------------------------------
def _dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_an_overwrite_killed_midway_is_put_back_by_the_next_command(tmp_path, capsys):
    before = _finished_run(tmp_path)
    pid = _dead_pid()
    killed = rundir.transaction._Replacement(tmp_path, tmp_path / "stale" / f".replacing-{pid}")  # what the killed process did
    killed.set_aside(["snn.json", "conversion.json"], ["energy.json", "snn.nir", "nir_export.json"])
    (tmp_path / "snn.json").write_text("new, incomplete")
    with rundir.locked(tmp_path, create=False):
        pass
    assert _tree(tmp_path) == before and not (tmp_path / "stale").exists()
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: put back snn.json, conversion.json, energy.json, snn.nir, nir_export.json ")
    assert f"process {pid}" in warning and "\n" not in warning


def test_set_aside_outputs_without_a_note_are_named_with_the_way_back(tmp_path, capsys):
    aside = tmp_path / "stale" / f".replacing-{_dead_pid()}"
    aside.mkdir(parents=True)
    (aside / "ann.weights.h5").write_text("old")
    with rundir.locked(tmp_path, create=False):
        pass
    assert (aside / "ann.weights.h5").read_text() == "old"
    assert capsys.readouterr().err.strip() == (
        f"warning: {aside} holds ann.weights.h5, set aside by an --overwrite (process {aside.name[11:]}) that did "
        f"not finish: move them back into {tmp_path} to restore the earlier results, or delete {aside}")


def test_a_failed_overwrite_leaves_no_empty_stale_folder(tmp_path):
    before = _finished_run(tmp_path)
    with pytest.raises(UserError, match="late"):
        with rundir.replacing(tmp_path):
            rundir.prepare_new(tmp_path, ["snn.json", "conversion.json"], False, True, stage="convert")
            raise UserError("a bad flag found late")
    assert _tree(tmp_path) == before and not (tmp_path / "stale").exists()


# --- 7. --run paths that mkdir cannot create ------------------------------------------------------------------
def test_run_directories_that_cannot_be_created_are_one_line(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "FILE").write_text("x")
    long_name = tmp_path / ("r" * 300)
    cases = [(tmp_path / "dangling", rf"--run {tmp_path / 'dangling'} is a symbolic link to {tmp_path / 'nowhere'}, "
                                     "which does not exist: create its target"),
             (tmp_path / "dangling" / "run", rf"{tmp_path / 'dangling'} is a symbolic link to .*which does not exist"),
             (tmp_path / "FILE" / "run", rf"{tmp_path / 'FILE'} is a file, not a folder: choose another --run"),
             (long_name, r"a name in it is 300 characters long \(rrrr.*\), more than the filesystem allows")]
    for run_dir, message in cases:
        with pytest.raises(UserError, match=message) as refused:
            rundir.make(run_dir)
        assert "\n" not in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "dangling"]


# --- 8. a re-run conversion moves the earlier NIR export aside ------------------------------------------------
def test_overwriting_the_conversion_moves_the_nir_export_made_from_it_to_stale(tmp_path, capsys):
    before = _finished_run(tmp_path)
    with rundir.replacing(tmp_path):
        rundir.prepare_new(tmp_path, ["snn.json", "snn.weights.h5", "conversion.json", "conversion.png"], False, True,
                           stage="convert")
        (tmp_path / "snn.json").write_text("new")
    after = _tree(tmp_path)
    stamp = next(name for name in after if name.startswith("stale/")).split("/")[1]
    for name in ("snn.nir", "nir_export.json", "energy.json"):
        assert after.pop(f"stale/{stamp}/{name}") == before.pop(name)
    assert "snn.nir" not in after and "nir_export.json" not in after
    assert after.pop("snn.json") == b"new"
    for name in ("snn.json", "snn.weights.h5", "conversion.json"):
        before.pop(name)
    assert after == before  # the training's files untouched
    assert "snn.nir, nir_export.json" in capsys.readouterr().out


def test_max_rate_sets_the_fine_tuned_paths_conversion_and_a_resume_keeps_it(tmp_path, monkeypatch):
    def parsed(*flags):
        return cli.run_all_config(cli.run_all_parser().parse_args(["--run", str(tmp_path), *flags]))

    assert parsed("--path", "snn4space").convert_config().max_rate == 2000.0  # 2 spikes per 1 ms step
    assert parsed("--path", "snn4space", "--max-rate", "1000").convert_config().max_rate == 1000.0
    relu = parsed("--path", "relu").convert_config()
    assert relu.max_rate == pytest.approx(4 / relu.dt)
    assert parsed("--path", "relu", "--max-rate", "250").convert_config().max_rate == 250.0
    with pytest.raises(UserError, match=r"^--max-rate sets the rate of the relu and snn4space paths' conversion"):
        parsed("--max-rate", "1000").validate()  # qcfs: bursts of its levels, no rate to set
    library = dataclasses.replace(parsed("--path", "snn4space"), max_rate=0.0)  # argparse is not there to refuse it
    with pytest.raises(UserError, match=r"^--max-rate must be a positive number of Hz, got 0.0"):
        library.validate()
    _recorded_relu_run(tmp_path, parsed("--path", "snn4space", "--max-rate", "250").settings())
    resumed = _resumed(monkeypatch, ["--run", str(tmp_path), "--resume"])
    assert (resumed.path, resumed.max_rate, resumed.convert_config().max_rate) == ("snn4space", 250.0, 250.0)
    with pytest.raises(UserError, match=r"^--max-rate 500.0 differs from the setting of the run being resumed, 250"):
        _resumed(monkeypatch, ["--run", str(tmp_path), "--resume", "--max-rate", "500"])


def test_a_run_records_the_rate_it_converts_at_and_a_resume_may_repeat_it(tmp_path, monkeypatch):
    default = cli.run_all_config(cli.run_all_parser().parse_args(["--run", str(tmp_path), "--path", "snn4space"]))
    assert default.settings()["max_rate"] == 2000.0  # not None: a later default would not apply to this run
    _recorded_relu_run(tmp_path, default.settings())
    resumed = _resumed(monkeypatch, ["--run", str(tmp_path), "--resume", "--max-rate", "2000"])  # the same rate
    assert resumed.convert_config().max_rate == 2000.0


def test_an_snn4space_run_recorded_before_max_rate_resumes_at_the_rate_it_started_with(tmp_path, monkeypatch):
    _recorded_relu_run(tmp_path, {"path": "snn4space", "max_timesteps": 32, "timesteps": None, "devices": ["loihi"],
                                  "fine_tune_epochs": 1, "sweep": False})  # no max_rate: the path's was 4000 Hz
    assert _resumed(monkeypatch, ["--run", str(tmp_path), "--resume"]).convert_config().max_rate == 4000.0

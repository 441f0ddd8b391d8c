"""Issue 33: the report, the NIR export, device profiles, conversion's dt and predict's progress against bad
input and a hostile file system: one line, no half output, names shown as written."""
import errno
import fcntl
import html
import io
import json
import os
import re
import shutil

import nir
import numpy as np
import pytest
import tensorflow as tf
from markdown_it import MarkdownIt

from snn4vision import costs, rundir
from snn4vision.stages import predict as predict_module
from snn4vision.stages.convert import ConvertConfig, check_finite, convert_snn
from snn4vision.data import load_image_file
from snn4vision.errors import UserError
from snn4vision.nir_io import write_nir
from snn4vision.stages.report import ReportConfig, reading, write_report
from snn4vision.report_pages import figures, markdown, write_pages

from .conftest import UCMERCED, make_subset

XSS = "<img src=x onerror=alert(1)>"


# --------------------------------------------------------------------------
# A made-up report, as write_report builds it
# --------------------------------------------------------------------------
def _model(run, model, kind, t, accuracy, classes, energy=1e-3):
    per_class = {c: accuracy for c in classes}
    spiking = kind != "ann"
    return {"run": run, "model": model, "kind": kind, "timesteps": t, "accuracy": accuracy, "parameters": 10,
            "ann_macs": 100.0, "synaptic_ops": 50.0 if spiking else None, "sop_per_mac": 0.5 if spiking else None,
            "spikes_per_image": 5.0 if spiking else None, "spikes_per_neuron_per_step": 0.1 if spiking else None,
            "layer_rates": {"n0": 0.1, "n1": 0.2} if spiking else None, "ms_per_image": 1.0,
            "train_s_per_epoch": None, "energy_J": {"gpu": energy}, "ann_J": {"gpu": energy},
            "per_class_accuracy": per_class, "confusion_matrix": np.eye(len(classes), dtype=int).tolist()}


def _report(models, runs=None):
    return {"machine": {"processor": "p", "python": "3", "tensorflow": "2", "threads": None},
            "runs": runs or [{"run": m, "path": m, "models": 1} for m in dict.fromkeys(x["run"] for x in models)],
            "devices": [{"name": "gpu", "spiking": False}], "timing": "t", "models": models}


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------
# 1. Writing to a read-only place or a full disk: one line, nothing left behind
# --------------------------------------------------------------------------
def _fails(number, text, suffix=""):
    """An ``os.fsync`` that fails with ``number`` for files whose path ends with ``suffix``."""
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(number, text)
        return real(fd)
    return fsync


@pytest.mark.parametrize("number, text", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EROFS, "Read-only file system")])
def test_a_report_that_cannot_be_written_is_one_error_and_leaves_no_file(tmp_path, monkeypatch, number, text):
    """The last file fails: an earlier report in ``old`` is kept byte for byte, a new folder is not left."""
    report = _report([_model("a", "vgg16 ANN", "ann", None, 0.9, ["x", "y"])])
    old = tmp_path / "old"
    write_pages(report, old)
    before = _files(old)
    monkeypatch.setattr(os, "fsync", _fails(number, text, "report.html"))
    with pytest.raises(UserError, match=re.escape(f"cannot write {old} ({text})")):
        write_pages(report, old)
    assert _files(old) == before and sorted(p.name for p in old.iterdir()) == sorted(before)
    with pytest.raises(UserError, match=f"cannot write {tmp_path / 'new'}"):
        write_pages(report, tmp_path / "new" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def _graph():
    return nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])),
                               "affine": nir.Affine(weight=np.eye(2, dtype=np.float32), bias=np.ones(2, np.float32)),
                               "output": nir.Output(output_type=np.array([2]))},
                        edges=[("input", "affine"), ("affine", "output")])


@pytest.mark.parametrize("number, text", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EACCES, "Permission denied")])
def test_a_nir_file_that_cannot_be_written_is_one_error_and_leaves_no_temporary_file(tmp_path, monkeypatch, number,
                                                                                    text):
    path = tmp_path / "snn.nir"
    write_nir(path, _graph())
    assert np.array_equal(nir.read(path).nodes["affine"].bias, np.ones(2))  # what is written reads back
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", _fails(number, text))
    with pytest.raises(UserError, match=re.escape(f"cannot write {path} ({text})")):
        write_nir(path, _graph())
    assert [p.name for p in tmp_path.iterdir()] == ["snn.nir"] and path.read_bytes() == before


# --------------------------------------------------------------------------
# 2, 3, 6. Names are drawn and written as they are; each run has its own classes
# --------------------------------------------------------------------------
def test_names_with_math_text_are_drawn_as_plain_text():
    """Unbalanced math text (which matplotlib cannot parse) in a class, run and model name: every figure draws,
    and shows the dollars as written."""
    classes = [r"$\frac{$", "cost $5"]
    report = _report([_model(r"r$^$", "vgg16 ANN", "ann", None, 0.9, classes),
                      _model(r"r$^$", r"vgg16 $\bad{$ SNN", "snn", 2, 0.8, classes)])
    drawn = figures(report)
    for fig in drawn.values():
        fig.savefig(io.BytesIO(), format="png")
    ticks = drawn["per_class_accuracy.png"].axes[0].get_xticklabels()
    assert [t._preprocess_math(t.get_text())[0] for t in ticks] == classes  # what matplotlib draws


def test_markdown_shows_names_as_written_and_keeps_its_table():
    models = [_model(XSS, "vgg16 ANN", "ann", None, 0.9, ["x"]),
              _model("b|c", f"{XSS} *SNN*", "snn", 2, 0.8, ["x"])]
    rendered = MarkdownIt("commonmark").enable("table").render(markdown(_report(models)))
    assert "<img" not in rendered and "<em>" not in rendered
    cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", rendered)]
    assert len(cells) == 2 * 12  # 11 columns and one device: the | of a name splits no cell
    assert cells[:2] == ["vgg16 ANN", XSS] and cells[12:14] == [f"{XSS} *SNN*", "b|c"]


def test_the_per_class_figure_uses_each_runs_own_classes():
    report = _report([_model("a", "vgg16 ANN", "ann", None, 0.5, ["beach", "forest"]),
                      _model("b", "vgg16 ANN", "ann", None, 0.25, ["harbor", "river", "forest"])])
    ax = figures(report)["per_class_accuracy.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["beach", "forest", "harbor", "river"]
    a, b = ax.containers
    # each model has one bar per class of its own, over that class's tick, at its own accuracy
    centres = [[round(bar.get_x() + bar.get_width() / 2) for bar in bars] for bars in (a, b)]
    assert centres == [[0, 1], [1, 2, 3]]
    assert [bar.get_height() for bar in a] == [50, 50] and [bar.get_height() for bar in b] == [25, 25, 25]


# --------------------------------------------------------------------------
# 7. Device profiles are checked when they are read
# --------------------------------------------------------------------------
GOOD = {"name": '"chip"', "spiking": "true", "energy_per_synop": "1e-12", "energy_per_neuron": "2e-12"}


@pytest.mark.parametrize("key, value, wanted", [
    ("energy_per_synop", '"1e-12"', "energy_per_synop must be a number of joules, 0 or more, got '1e-12'"),
    ("energy_per_neuron", "-2e-12", "energy_per_neuron must be a number of joules, 0 or more, got -2e-12"),
    ("energy_per_mac", "true", "energy_per_mac must be a number of joules, 0 or more, got True"),
    ("energy_per_mac", "nan", "energy_per_mac must be a number of joules, 0 or more, got nan"),
    ("spiking", '"yes"', "spiking must be true or false, got 'yes'"),
    ("name", '""', "name must be a non-empty string"),
    ("energy_per_neuron", None, "energy_per_neuron is missing"),
])
def test_a_bad_profile_value_is_named_with_its_file_key_and_range(tmp_path, key, value, wanted):
    values = dict(GOOD, **{key: value})
    (tmp_path / "chip.toml").write_text("".join(f"{k} = {v}\n" for k, v in values.items() if v is not None))
    with pytest.raises(UserError, match=re.escape(f"device profile {tmp_path / 'chip.toml'} is invalid: {wanted}")):
        costs.load_devices(tmp_path)


def test_a_good_profile_loads_with_its_values(tmp_path):
    (tmp_path / "chip.toml").write_text("".join(f"{k} = {v}\n" for k, v in GOOD.items()) + "energy_per_mac = 0\n")
    chip = costs.load_devices(tmp_path)["chip"]
    assert (chip.spiking, chip.energy_per_synop, chip.energy_per_neuron, chip.mac) == (True, 1e-12, 2e-12, 0)


# --------------------------------------------------------------------------
# 8. Conversion refuses a dt it cannot simulate, and never writes a NaN SNN
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dt", [1e-40, 1e-9, float("inf"), 1e4])
def test_a_dt_outside_the_simulators_range_is_refused_up_front(dt):
    with pytest.raises(UserError, match=re.escape(f"--dt must be between 1e-08 and 1000 seconds, got {dt}")):
        ConvertConfig("run", dt=dt).validate()
    ConvertConfig("run", dt=1e-8).validate()
    ConvertConfig("run", dt=1.0).validate()  # SNN4Space's recipe


def test_an_snn_with_non_finite_weights_or_outputs_is_refused():
    class Snn:
        weights = [tf.Variable([1.0, 2.0])]

    check_finite(Snn, np.ones((2, 3)), 1e-3)
    with pytest.raises(UserError, match="non-finite weights or outputs"):
        check_finite(Snn, np.array([[1.0, np.nan]]), 1e-3)
    Snn.weights = [tf.Variable([1.0, np.inf])]
    with pytest.raises(UserError, match="non-finite weights or outputs"):
        check_finite(Snn, np.ones((2, 3)), 1e-3)


# --------------------------------------------------------------------------
# On a converted run: reading, ANN-only runs, the spikes column, predict's progress
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory, ucmerced):
    """A run of a tiny ANN (4 classes x 20 real images, 2 epochs: its accuracy does not matter here), converted."""
    from snn4vision import cli
    from snn4vision.stages.training import train_ann

    data = make_subset(tmp_path_factory.mktemp("ucm4"), ["beach", "chaparral", "forest", "runway"], 20)
    run_dir = tmp_path_factory.mktemp("report") / "run"
    args = cli.train_ann_parser().parse_args(["--run", str(run_dir), "--dataset", str(data), "--image-size", "32",
                                              "--width", "0.125", "--epochs", "2", "--batch-size", "16"])
    train_ann(cli.train_config(args), verbose=False)
    convert_snn(ConvertConfig(str(run_dir), max_timesteps=2, sweep=False, normalisation_images=32), verbose=False)
    return run_dir


@pytest.fixture(scope="module")
def reported(converted, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report"
    report = write_report(ReportConfig([str(converted)], str(out), timesteps=[2], devices=["gpu"], timing_images=4),
                          verbose=False)
    return report, out


@pytest.mark.slow  # the module's trained and converted run: about 16 s
def test_the_spikes_per_neuron_per_step_column_by_hand(converted, reported):
    """From the run's files: the SNN's neuron layers (snn.json) and its spikes on the test images (split.json),
    decoded one by one; spikes per image / (neurons x T) is the page's cell."""
    config = json.loads((converted / "snn.json").read_text())
    neurons = sum(int(np.prod(n["shape"])) for n in config["graph"]["nodes"] if n["op"] == "neuron")
    split = json.loads((converted / "split.json").read_text())
    size = json.loads((converted / "config.json").read_text())["image_size"]
    images = np.stack([load_image_file(f"{split['source']['root']}/{item}", size) for item, _ in split["test"]])
    spikes = rundir.load_snn(converted, 2).simulate(images.astype(np.float32) / 255, 2)["spikes"].numpy()
    expected = spikes.sum(axis=(1, 2)).mean() / (neurons * 2)
    assert 0 < expected < 1
    page = (reported[1] / "report.html").read_text()
    row = re.search(r'<tr class="snn[^"]*" data-row="1">(.*?)</tr>', page).group(1)
    cell = re.search(r'data-key="spikes_per_neuron_per_step" data-value="([^"]*)">([^<]*)<', row)
    assert float(cell.group(1)) == pytest.approx(expected, rel=1e-5) and cell.group(2) == f"{expected:.3f}"


@pytest.mark.slow  # the module's trained and converted run
def test_a_read_only_run_is_reported_without_writing_to_it(converted, reported, tmp_path, monkeypatch):
    """As on a read-only share: the run directory may not be written, and is not."""
    def access(path, mode, **kwargs):
        return False if mode & os.W_OK and str(path).startswith(str(converted)) else real(path, mode, **kwargs)

    real = os.access
    before = _files(converted)
    monkeypatch.setattr(os, "access", access)
    report = write_report(ReportConfig([str(converted)], str(tmp_path / "out"), timesteps=[2], devices=["gpu"],
                                       timing_images=4), verbose=False)
    assert [m["accuracy"] for m in report["models"]] == [m["accuracy"] for m in reported[0]["models"]]
    assert _files(converted) == before


@pytest.mark.slow  # the module's trained and converted run
def test_a_run_being_written_is_not_read(converted):
    with open(converted / rundir.LOCK, "a+") as writer:  # a stage holds the run
        fcntl.flock(writer, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="is in use by process"):
            with reading(converted):
                pass
    with reading(converted), reading(converted):  # readers share it
        pass


@pytest.mark.slow  # the module's trained and converted run
def test_an_ann_only_run_is_reported_and_says_its_snn_is_missing(converted, reported, tmp_path, capsys):
    run_dir = tmp_path / "annonly"
    shutil.copytree(converted, run_dir)
    for name in ("snn.json", "snn.weights.h5", "conversion.json"):
        (run_dir / name).unlink()
    report = write_report(ReportConfig([str(run_dir)], str(tmp_path / "out"), devices=["gpu"], timing_images=4),
                          verbose=False)
    assert f"warning: no converted SNN ({rundir.SNN_CONFIG})" in capsys.readouterr().err
    (ann,) = report["models"]
    full = reported[0]["models"][0]  # the same ANN, costed through its SNN
    assert ann["kind"] == "ann" and ann["accuracy"] == full["accuracy"]
    assert ann["ann_macs"] == full["ann_macs"] > 0 and ann["energy_J"] == pytest.approx(full["energy_J"])
    assert "no converted SNN" in report["runs"][0]["missing"]
    for page in ("report.html", "report.md"):
        assert "no converted SNN" in (tmp_path / "out" / page).read_text()


@pytest.mark.slow  # the module's trained and converted run
def test_a_long_prediction_prints_progress_lines(converted, monkeypatch, capsys):
    monkeypatch.setattr(predict_module, "BATCH", 2)
    monkeypatch.setattr(predict_module, "PROGRESS_INTERVAL", 0.0)
    images = [str(UCMERCED / "beach" / f"beach{i:02d}.jpg") for i in range(5)]
    rows = predict_module.predict(converted, images, "snn", timesteps=2)
    assert [r["image"] for r in rows] == images and all("spikes" in r for r in rows)
    err = capsys.readouterr().err
    assert re.findall(r"predicting 5 images, T = 2: (\d)/3", err) == ["1", "2", "3"]


@pytest.mark.slow  # the module's trained and converted run
@pytest.mark.filterwarnings("error::RuntimeWarning")  # an overflow warning is a second, noisy line
def test_a_conversion_to_a_nan_snn_writes_nothing(converted, tmp_path):
    """Rates beyond float32 (an absurd --max-rate, as a tiny dt gives) make a NaN SNN: refused before they are
    cast, and the run's earlier conversion, set aside by --overwrite, is back as it was."""
    run_dir = tmp_path / "run"
    shutil.copytree(converted, run_dir)
    before = {k: v for k, v in _files(run_dir).items() if k != rundir.LOCK}
    with pytest.raises(UserError, match="non-finite weights or outputs"):
        convert_snn(ConvertConfig(str(run_dir), max_timesteps=2, sweep=False, max_rate=1e300,
                                  normalisation_images=32), overwrite=True, verbose=False)
    assert {k: v for k, v in _files(run_dir).items() if k != rundir.LOCK} == before

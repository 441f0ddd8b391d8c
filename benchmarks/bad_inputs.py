"""The bad-input table of issue 13: every pipeline script against the mistakes a careful user makes.

Not a speed benchmark: each case runs one pipeline command in a fresh copy of a small finished run and
is judged by its exit status, its stderr and what happened to the files that were there before:

- clean: exit 2 with one ``error:`` line (argparse's usage line plus its error counts as clean too);
- warned: exit 0 with a ``warning:`` line, where the input is usable but odd (a 1x1 image);
- traceback: a Python traceback, or an exit status other than 0, 2 and 130;
- silent: exit 0 where the input should have been refused or named;
- lost: a file that was there before is gone or changed after a refused command;
- left: a refused command left new files behind (half outputs).

Usage: ``.venv/bin/python benchmarks/bad_inputs.py [--workers 2] [--only TEXT ...]``; writes
``benchmarks/results/bad_inputs.md``. Needs ../shared/data; takes about 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
UCMERCED = ROOT.parent / "shared" / "data" / "ucmerced"
UCMERCED_TIFF = ROOT.parent / "shared" / "data" / "ucmerced_tiff"
PYTHON = sys.executable
CLASSES = ["beach", "chaparral", "forest", "runway"]


@dataclass
class Case:
    stage: str  # the pipeline script, without .py
    name: str
    argv: list  # "{run}", "{data}", "{work}" are filled in
    base: str | None = None  # "ann" (trained, converted, fine-tuned, costed) or "sdt" (spiking transformer)
    prepare: Callable | None = None  # prepare(run_dir, work_dir) before the command
    expect: str = "error"  # "error", "warning" or "ok"
    env: dict = field(default_factory=dict)


def _script(stage: str) -> str:
    return str(ROOT / "pipelines" / f"{stage}.py")


def _run(stage: str, argv: list, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, _script(stage), *argv], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})))


def _snapshot(directory: Path) -> dict:
    if not directory.is_dir():
        return {}
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.rglob("*") if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------ the runs every case starts from
def build_bases(work: Path) -> dict:
    data = work / "ucm4"
    for name in CLASSES:
        (data / name).mkdir(parents=True)
        for image in sorted((UCMERCED / name).iterdir())[:20]:
            (data / name / image.name).symlink_to(image)
    ann = work / "base-ann"
    steps = [("train_ann", ["--run", ann, "--dataset", data, "--image-size", "32", "--width", "0.125", "--epochs",
                            "2", "--batch-size", "16"]),
             ("convert_snn", ["--run", ann, "--timesteps", "4", "--no-sweep"]),
             ("fine_tune", ["--run", ann, "--timesteps", "2", "--epochs", "1", "--max-train-images", "32"]),
             ("energy_estimation", ["--run", ann, "--devices", "gpu", "loihi"]),
             ("train_spiking_transformer", ["--run", work / "base-sdt", "--dataset", data, "--image-size", "32",
                                            "--depth", "1", "--dim", "32", "--heads", "2", "--timesteps", "2",
                                            "--epochs", "1", "--batch-size", "16"])]
    for stage, argv in steps:
        result = _run(stage, [str(a) for a in argv])
        if result.returncode != 0:
            raise SystemExit(f"building the base runs failed at {stage}:\n{result.stderr[-2000:]}")
    return {"ann": ann, "sdt": work / "base-sdt", "data": data}


# ------------------------------------------------------------------ ways to damage a run or a dataset
def _write(relative: str, content: bytes) -> Callable:
    def prepare(run, work):
        (run / relative).write_bytes(content)
    return prepare


def _truncate(relative: str) -> Callable:
    def prepare(run, work):
        path = run / relative
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return prepare


def _remove(*relatives: str) -> Callable:
    def prepare(run, work):
        for relative in relatives:
            path = run / relative
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return prepare


def _perturb(relative: str) -> Callable:
    """Change one weight, as a re-trained or swapped-in file would (still a valid file)."""
    def prepare(run, work):
        import h5py

        with h5py.File(run / relative, "r+") as handle:
            names = []
            handle.visititems(lambda n, item: names.append(n) if isinstance(item, h5py.Dataset) else None)
            handle[names[0]][...] = handle[names[0]][()] + 1
    return prepare


def _dataset(kind: str) -> Callable:
    """A dataset folder ``{work}/bad`` with one odd entry beside real images."""
    def prepare(run, work):
        bad = work / "bad"
        for name in CLASSES[:2]:
            (bad / name).mkdir(parents=True, exist_ok=True)
            for image in sorted((UCMERCED / name).iterdir())[:10]:
                (bad / name / image.name).symlink_to(image)
        target = bad / CLASSES[0]
        if kind == "4-band tiff":
            import numpy as np
            import tifffile
            from PIL import Image

            rgb = np.asarray(Image.open(sorted(UCMERCED_TIFF.glob("*/*.tif"))[0]).convert("RGB"))
            four = np.concatenate([rgb, rgb[..., :1]], -1)
            # contig: without it tifffile writes a (h, w, 4) array as h pages of (w, 4) grey images
            tifffile.imwrite(target / "nir.tif", four, photometric="minisblack", planarconfig="contig")
            _check_fixture(target / "nir.tif", four)
        elif kind == "1x1 image":
            from PIL import Image

            Image.new("RGB", (1, 1)).save(target / "dot.png")
        elif kind == "dangling link":
            (target / "gone.jpg").symlink_to(work / "nowhere.jpg")
        elif kind == "corrupt jpeg":
            (target / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        elif kind == "text as jpeg":
            (target / "notes.jpg").write_text("hello")
        elif kind == "empty class":
            (bad / "empty").mkdir()
        elif kind == "no classes":
            shutil.rmtree(bad)
            bad.mkdir()
        elif kind == "one image per class":
            for name in CLASSES[:2]:
                for image in sorted((bad / name).iterdir())[1:]:
                    image.unlink()
    return prepare


def _check_fixture(path: Path, expected) -> None:
    """A fixture is what its case says it is: one page holding exactly ``expected``."""
    import numpy as np
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        if len(tiff.pages) != 1 or not np.array_equal(tiff.pages[0].asarray(), expected):
            raise SystemExit(f"fixture {path} is not what its case claims: {len(tiff.pages)} pages, "
                             f"shape {tiff.pages[0].shape}")


def _hold_lock(run, work):
    """Another process holding the run directory (as a stage in progress does)."""
    code = ("import sys, time; sys.path.insert(0, %r); from snn4vision import rundir; "
            "ctx = rundir.locked(%r); ctx.__enter__(); print('held', flush=True); time.sleep(120)") % (str(ROOT), str(run))
    holder = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    return holder


def _odd_data(kind: str) -> Callable:
    """Issue 33: the dataset of :func:`_dataset` with one entry the decoder or the folder scan once mishandled."""
    def prepare(run, work):
        _dataset("plain")(run, work)
        bad, target = work / "bad", work / "bad" / CLASSES[0]
        if kind in ("a decompression bomb", "a 12000x12000 image"):
            import struct
            import zlib

            side = 60000 if kind == "a decompression bomb" else 12000

            def chunk(tag, body):
                return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

            header = chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))  # 8-bit RGB
            # a tiny file: only the header's size matters, the pixel data are cut short
            pixels = chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
            (target / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + pixels)
        elif kind == "a 4-band tiff named .png":
            import numpy as np
            import tifffile

            tifffile.imwrite(target / "nir.png", np.zeros((64, 64, 4), np.uint8), photometric="minisblack",
                             planarconfig="contig")
        elif kind == "hidden folders":
            (bad / ".ipynb_checkpoints").mkdir()
            (bad / ".git").mkdir()
        elif kind == "a class folder symlink loop":
            (bad / "loop").symlink_to(bad / "loop")
        elif kind == "an image symlink loop":
            (target / "loop.jpg").symlink_to(target / "loop.jpg")
    return prepare


def _events(kind: str) -> Callable:
    """Issue 32: an event folder ``{work}/events`` (2 classes x 10 recordings emulated at 32 x 32, .npz) with one
    recording made bad as ``kind`` says."""
    def prepare(run, work):
        import numpy as np

        from snn4vision import events

        images, folder = work / "event-images", work / "events"
        for name in CLASSES[:2]:
            (images / name).mkdir(parents=True, exist_ok=True)
            for image in sorted((UCMERCED / name).iterdir())[:10]:
                (images / name / image.name).symlink_to(image)
        events.write_emulated_dataset(images, folder, size=32)
        target = sorted((folder / CLASSES[0]).iterdir())[0]
        good = events.read_events(target).events
        columns = {name: good[name] for name in events.FIELDS}
        if kind == "unsorted times":
            columns["t"] = columns["t"][::-1].copy()
        elif kind == "coordinates outside the sensor":
            columns["x"] = columns["x"].copy()
            columns["x"][0] = 40
        elif kind == "an empty recording":
            columns = {name: values[:0] for name, values in columns.items()}
        if kind == "a .npy without its sensor size":
            target.unlink()
            np.save(target.with_suffix(".npy"), good)
        elif kind != "none":
            np.savez(target, sensor_size=[32, 32], **columns)
    return prepare


# ------------------------------------------------------------------ the cases
def cases() -> list:
    c = []
    add = c.append
    tiny = ["--image-size", "32", "--width", "0.125", "--epochs", "1", "--batch-size", "16"]
    # train_ann: flags
    for flags, name in [(["--image-size", "0"], "image size 0"), (["--image-size", "8"], "image size 8"),
                        (["--width", "0"], "width 0"), (["--width", "-1"], "width -1"),
                        (["--batch-size", "0"], "batch size 0"), (["--epochs", "0"], "epochs 0"),
                        (["--learning-rate", "0"], "learning rate 0"), (["--learning-rate", "-1"], "learning rate -1"),
                        (["--learning-rate", "nan"], "learning rate nan"),
                        (["--split", "0.5", "0.5", "0.5"], "split sums to 1.5"), (["--split", "1", "0", "0"], "empty val"),
                        (["--augment", "bogus"], "unknown augmentation"), (["--optimizer", "bogus"], "unknown optimizer"),
                        (["--seed", "abc"], "seed not a number"), (["--preset", "bogus"], "unknown preset"),
                        (["--weights", "/no/such.h5"], "missing --weights file"),
                        (["--weights", "imagenet"], "imagenet weights offline"),
                        (["--label-smoothing", "1"], "label smoothing 1"), (["--qcfs-warmup", "1"], "qcfs warm-up 1"),
                        (["--levels", "0"], "qcfs levels 0"), (["--mask"], "--mask without an edge filter"),
                        (["--input-transform", "canny"], "unknown edge filter"),
                        (["--architecture", "resnet50"], "unknown architecture"),
                        (["--architecture", "resnet18", "--no-batch-norm"], "resnet without BatchNorm"),
                        (["--architecture", "resnet20", "--weights", "imagenet"], "resnet with imagenet weights")]:
        add(Case("train_ann", name, ["--run", "{work}/new", "--dataset", "{data}", *tiny, *flags]))
    add(Case("train_ann", "unknown edge filter in a dataset name",
             ["--run", "{work}/new", "--dataset", "ucm_prewitt_blur", *tiny]))
    add(Case("train_ann", "dataset name and flag ask for other edge filters",
             ["--run", "{work}/new", "--dataset", "ucm_prewitt", "--input-transform", "sobel", *tiny]))
    add(Case("train_ann", "dataset path typo", ["--run", "{work}/new", "--dataset", "/typo", *tiny]))
    add(Case("train_ann", "unknown dataset name", ["--run", "{work}/new", "--dataset", "imagenette", *tiny]))
    add(Case("train_ann", "eurosat not on disk, offline", ["--run", "{work}/new", "--dataset", "eurosat", "--data-dir",
                                                           "{work}/tfds", *tiny]))
    add(Case("train_ann", "--overwrite with a dataset typo", ["--run", "{run}", "--dataset", "/typo", "--overwrite", *tiny],
             base="ann"))
    add(Case("train_ann", "finished run, no flag", ["--run", "{run}", "--dataset", "{data}", *tiny], base="ann"))
    add(Case("train_ann", "--resume a finished run", ["--run", "{run}", "--resume"], base="ann"))
    add(Case("train_ann", "--resume with nothing there", ["--run", "{work}/new", "--resume"]))
    add(Case("train_ann", "--resume a transformer run", ["--run", "{run}", "--resume", "--dataset", "{data}"], base="sdt"))
    add(Case("train_ann", "a transformer run, no flag", ["--run", "{run}", "--dataset", "{data}", *tiny], base="sdt"))
    add(Case("train_ann", "--run is a file", ["--run", "{work}/file", "--dataset", "{data}", *tiny],
             prepare=lambda run, work: (work / "file").write_text("x")))
    add(Case("train_ann", "run directory in use", ["--run", "{run}", "--dataset", "{data}", "--overwrite", *tiny],
             base="ann", prepare=_hold_lock))
    add(Case("train_ann", "diverging (sgd, lr 1e3)", ["--run", "{work}/new", "--dataset", "{data}", *tiny,
                                                      "--optimizer", "sgd", "--learning-rate", "1e3"]))
    add(Case("train_ann", "damaged config.json, --resume", ["--run", "{run}", "--resume"], base="ann",
             prepare=lambda run, work: (_write("config.json", b"{not json")(run, work), _remove("metrics.json")(run, work))))
    # transfer learning and several workers
    two_workers = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                              "task": {"type": "worker", "index": 0}})
    for flags, name, base, env in [
            (["--init-from", "/no/such/run"], "--init-from a missing run", None, {}),
            (["--init-from", "{run}", "--architecture", "resnet20"], "--init-from another architecture", "ann", {}),
            (["--init-from", "{run}", "--width", "0.25"], "--init-from another width", "ann", {}),
            (["--init-from", "{run}"], "--init-from a spiking transformer run", "sdt", {}),
            (["--init-from", "{work}/new"], "--init-from its own run directory", None, {}),
            (["--freeze-backbone", "2"], "--freeze-backbone without --init-from", None, {}),
            (["--init-from", "{run}", "--freeze-backbone", "5"], "--freeze-backbone beyond --epochs", "ann", {}),
            (["--backbone-lr-factor", "0"], "--backbone-lr-factor 0", None, {}),
            (["--batch-size", "15"], "two workers, odd global batch", None, {"TF_CONFIG": two_workers}),
            ([], "TF_CONFIG not JSON", None, {"TF_CONFIG": "{worker"}),
            ([], "TF_CONFIG task outside its cluster", None,
             {"TF_CONFIG": two_workers.replace('"index": 0', '"index": 5')}),
            ([], "TF_CONFIG with a parameter server", None,
             {"TF_CONFIG": json.dumps({"cluster": {"worker": ["h:1"], "ps": ["h:2"]},
                                       "task": {"type": "worker", "index": 0}})})]:
        add(Case("train_ann", name, ["--run", "{work}/new", "--dataset", "{data}", *tiny, *flags], base=base,
                 env=env))
    for kind in ["4-band tiff", "corrupt jpeg", "text as jpeg", "empty class", "no classes", "one image per class"]:
        add(Case("train_ann", f"dataset with {kind}", ["--run", "{work}/new", "--dataset", "{work}/bad", *tiny],
                 prepare=_dataset(kind)))
    for kind in ["1x1 image", "dangling link"]:
        add(Case("train_ann", f"dataset with {kind}", ["--run", "{work}/new", "--dataset", "{work}/bad", *tiny],
                 prepare=_dataset(kind), expect="warning"))
    # train_spiking_transformer
    small = ["--image-size", "32", "--depth", "1", "--dim", "32", "--heads", "2", "--epochs", "1"]
    for flags, name in [(["--dim", "36", "--heads", "8"], "dim not a multiple of 8"),
                        (["--pooling", "01"], "pooling of 2 flags"), (["--timesteps", "0"], "T 0"),
                        (["--timesteps", "100000"], "T 100000"), (["--timesteps", "4000", "--batch-size", "64"],
                                                                  "T 4000: too much memory"),
                        (["--depth", "0"], "depth 0"), (["--heads", "0"], "heads 0"), (["--model", "vit"], "unknown model")]:
        add(Case("train_spiking_transformer", name, ["--run", "{work}/new", "--dataset", "{data}", *small, *flags]))
    add(Case("train_spiking_transformer", "--resume an ANN run", ["--run", "{run}", "--resume"], base="ann"))
    add(Case("train_spiking_transformer", "--init-from an ANN run",
             ["--run", "{work}/new", "--dataset", "{data}", *small, "--init-from", "{run}"], base="ann"))
    add(Case("train_spiking_transformer", "--overwrite with a dataset typo",
             ["--run", "{run}", "--dataset", "/typo", "--overwrite", *small], base="sdt"))
    # convert_snn
    for flags, name in [(["--timesteps", "0"], "T 0"), (["--timesteps", "1000000"], "T 1000000"), (["--dt", "0"], "dt 0"),
                        (["--tau", "-1"], "tau -1"), (["--percentile", "0"], "percentile 0"),
                        (["--percentile", "101"], "percentile 101"), (["--max-spikes-per-step", "0"], "bursts 0"),
                        (["--no-signed", "--max-spikes-per-step", "3"], "bursts without signed neurons"),
                        (["--batch-size", "0"], "batch size 0"), (["--readout-fraction", "2"], "read-out fraction 2"),
                        (["--synapse", "bogus"], "unknown synapse")]:
        add(Case("convert_snn", name, ["--run", "{run}", "--overwrite", *flags], base="ann"))
    add(Case("convert_snn", "converted run, no flag", ["--run", "{run}"], base="ann"))
    add(Case("convert_snn", "--overwrite with --data-dir typo", ["--run", "{run}", "--overwrite", "--data-dir", "/typo"],
             base="ann"))
    add(Case("convert_snn", "no run directory", ["--run", "{work}/none"]))
    add(Case("convert_snn", "--run is a file", ["--run", "{work}/file"], prepare=lambda r, w: (w / "file").write_text("x")))
    add(Case("convert_snn", "no ann.weights.h5", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_remove("ann.weights.h5")))
    add(Case("convert_snn", "truncated ann.weights.h5", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_truncate("ann.weights.h5")))
    add(Case("convert_snn", "ann.weights.h5 not HDF5", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_write("ann.weights.h5", b"hello")))
    add(Case("convert_snn", "ann.weights.h5 changed since training", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_perturb("ann.weights.h5")))
    add(Case("convert_snn", "damaged split.json", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_write("split.json", b"[1, 2")))
    add(Case("convert_snn", "split.json missing", ["--run", "{run}", "--overwrite"], base="ann", prepare=_remove("split.json")))
    add(Case("convert_snn", "a transformer run", ["--run", "{run}"], base="sdt"))
    add(Case("convert_snn", "run directory in use", ["--run", "{run}", "--overwrite"], base="ann", prepare=_hold_lock))
    # fine_tune
    for flags, name in [(["--timesteps", "0"], "T 0"), (["--timesteps", "1000000"], "T 1000000"),
                        (["--timesteps", "4096", "--batch-size", "100000"], "too much memory"),
                        (["--batch-size", "0"], "batch size 0"), (["--epochs", "0"], "epochs 0"),
                        (["--learning-rate", "0"], "learning rate 0"), (["--rate-band", "5", "1"], "rate band 5 1"),
                        (["--learning-rate", "1e9"], "diverging (lr 1e9)"),
                        (["--recipe", "snn4space"], "snn4space recipe on an SNN converted at dt 1 ms"),
                        (["--dt-min", "0.001"], "--dt-min without --train-dt"), (["--rate-l2", "-1"], "rate l2 -1"),
                        (["--tau-min", "0.001"], "--tau-min without --dt-min")]:
        add(Case("fine_tune", name, ["--run", "{run}", "--overwrite", "--max-train-images", "16", *flags], base="ann"))
    add(Case("fine_tune", "fine-tuned run, no flag", ["--run", "{run}"], base="ann"))
    add(Case("fine_tune", "--resume with no checkpoint", ["--run", "{run}", "--resume"], base="ann",
             prepare=_remove("checkpoints/fine_tune")))
    add(Case("fine_tune", "--overwrite with --data-dir typo", ["--run", "{run}", "--overwrite", "--data-dir", "/typo"],
             base="ann"))
    add(Case("fine_tune", "no snn.json", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_remove("snn.json", "snn.weights.h5")))
    add(Case("fine_tune", "truncated snn.weights.h5", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_truncate("snn.weights.h5")))
    add(Case("fine_tune", "damaged snn.json", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_write("snn.json", b"{\"channels\": ")))
    add(Case("fine_tune", "SNN made from an ANN changed since", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_perturb("ann.weights.h5")))
    add(Case("fine_tune", "a transformer run", ["--run", "{run}"], base="sdt"))
    # energy_estimation
    for flags, name in [(["--devices", "tpu"], "unknown device"), (["--timesteps", "0"], "T 0"),
                        (["--timesteps", "1000000"], "T 1000000"), (["--model", "bogus"], "unknown model"),
                        (["--profiles", "/no/such"], "missing profiles folder"), (["--batch-size", "0"], "batch size 0")]:
        add(Case("energy_estimation", name, ["--run", "{run}", "--overwrite", *flags], base="ann"))
    add(Case("energy_estimation", "profile file invalid", ["--run", "{run}", "--overwrite", "--profiles", "{work}/profiles"],
             base="ann", prepare=lambda r, w: ((w / "profiles").mkdir(), (w / "profiles" / "x.toml").write_text("name = 1"))))
    add(Case("energy_estimation", "costed run, no flag", ["--run", "{run}"], base="ann"))
    add(Case("energy_estimation", "--overwrite with --data-dir typo", ["--run", "{run}", "--overwrite", "--data-dir",
                                                                       "/typo"], base="ann"))
    add(Case("energy_estimation", "--model fine-tuned, none there", ["--run", "{run}", "--overwrite", "--model",
                                                                     "fine-tuned"], base="ann",
             prepare=_remove("fine_tuned.json", "fine_tuned.weights.h5")))
    add(Case("energy_estimation", "no SNN", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_remove("snn.json", "snn.weights.h5", "fine_tuned.json", "fine_tuned.weights.h5")))
    add(Case("energy_estimation", "fine-tuned SNN file swapped", ["--run", "{run}", "--overwrite"], base="ann",
             prepare=_perturb("fine_tuned.weights.h5")))
    add(Case("energy_estimation", "transformer at T 100000", ["--run", "{run}", "--overwrite", "--timesteps", "100000"],
             base="sdt"))
    add(Case("energy_estimation", "transformer at T 4000: memory", ["--run", "{run}", "--timesteps", "4000",
                                                                    "--batch-size", "64"], base="sdt"))
    add(Case("energy_estimation", "no run directory", ["--run", "{work}/none"]))
    # predict
    image = str(UCMERCED / "beach" / "beach00.jpg")
    add(Case("predict", "missing image", ["--run", "{run}", "/no/such.jpg"], base="ann"))
    add(Case("predict", "text file as image", ["--run", "{run}", "/etc/hostname"], base="ann"))
    add(Case("predict", "corrupt jpeg", ["--run", "{run}", "{work}/bad.jpg"], base="ann",
             prepare=lambda r, w: (w / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")))
    add(Case("predict", "4-band tiff", ["--run", "{run}", "{work}/bad/beach/nir.tif"], base="ann",
             prepare=_dataset("4-band tiff")))
    add(Case("predict", "no images", ["--run", "{run}"], base="ann"))
    # issue 32: event recordings
    for kind in ("unsorted times", "coordinates outside the sensor", "an empty recording",
                 "a .npy without its sensor size"):
        add(Case("train_ann", f"events: {kind}", ["--run", "{work}/new", "--dataset", "{work}/events", *tiny],
                 prepare=_events(kind)))
    add(Case("train_ann", "events: --sensor-size other than the files'",
             ["--run", "{work}/new", "--dataset", "{work}/events", "--sensor-size", "16", "16", *tiny],
             prepare=_events("none")))
    add(Case("train_ann", "events: --bands", ["--run", "{work}/new", "--dataset", "{work}/events", "--bands", "1",
                                              *tiny], prepare=_events("none")))
    add(Case("train_ann", "images with --sensor-size",
             ["--run", "{work}/new", "--dataset", "{data}", "--sensor-size", "32", "32", *tiny]))
    add(Case("predict", "an event file to an image run", ["--run", "{run}", "{work}/events/beach/beach00.npz"],
             base="ann", prepare=_events("none")))
    add(Case("predict", "unknown model", ["--run", "{run}", "--model", "bogus", image], base="ann"))
    add(Case("predict", "T 0", ["--run", "{run}", "--model", "snn", "--timesteps", "0", image], base="ann"))
    add(Case("predict", "T 1000000", ["--run", "{run}", "--model", "snn", "--timesteps", "1000000", image], base="ann"))
    add(Case("predict", "fine-tuned, none there", ["--run", "{run}", "--model", "fine-tuned", image], base="ann",
             prepare=_remove("fine_tuned.json", "fine_tuned.weights.h5")))
    add(Case("predict", "no classes.json", ["--run", "{run}", image], base="ann", prepare=_remove("classes.json")))
    add(Case("predict", "ANN weights swapped", ["--run", "{run}", image], base="ann", prepare=_perturb("ann.weights.h5")))
    add(Case("predict", "transformer at T 100000", ["--run", "{run}", "--timesteps", "100000", image], base="sdt"))
    add(Case("predict", "1x1 image", ["--run", "{run}", "{work}/dot.png"], base="ann", expect="warning",
             prepare=lambda r, w: __import__("PIL.Image").Image.new("RGB", (1, 1)).save(w / "dot.png")))
    add(Case("predict", "no run directory", ["--run", "{work}/none", image]))
    # run_all
    add(Case("run_all", "dataset typo", ["--run", "{work}/new", "--dataset", "/typo", *tiny]))
    add(Case("run_all", "unknown path", ["--run", "{work}/new", "--dataset", "{data}", "--path", "bogus", *tiny]))
    add(Case("run_all", "used run directory", ["--run", "{run}", "--dataset", "{data}", *tiny], base="ann"))
    add(Case("run_all", "TF_CONFIG with two workers", ["--run", "{work}/new", "--dataset", "{data}", *tiny],
             env={"TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                           "task": {"type": "worker", "index": 0}})}))
    add(Case("run_all", "--resume with nothing there", ["--run", "{work}/new", "--resume"]))
    add(Case("run_all", "T 1000000", ["--run", "{work}/new", "--dataset", "{data}", "--timesteps", "1000000", *tiny]))
    add(Case("run_all", "--max-rate on the qcfs path", ["--run", "{work}/new", "--dataset", "{data}", "--max-rate",
                                                          "2000", *tiny]))
    for rate in ("0", "-5", "nan"):
        add(Case("run_all", f"snn4space path at --max-rate {rate}", ["--run", "{work}/new", "--dataset", "{data}",
                                                                     "--path", "snn4space", "--max-rate", rate, *tiny]))
    # export_nir
    add(Case("export_nir", "keras-spiking neurons", ["--run", "{run}"], base="ann"))
    add(Case("export_nir", "keras-spiking neurons, --approximate", ["--run", "{run}", "--approximate"], base="ann"))
    add(Case("export_nir", "transformer run", ["--run", "{run}"], base="sdt"))
    add(Case("export_nir", "no run directory", ["--run", "{work}/none"]))
    add(Case("export_nir", "--out in a missing folder", ["--run", "{run}", "--out", "{work}/no/snn.nir"], base="ann"))
    add(Case("export_nir", "--out is a folder", ["--run", "{run}", "--out", "{work}"], base="ann"))
    add(Case("export_nir", "T 0", ["--run", "{run}", "--timesteps", "0"], base="ann"))
    add(Case("export_nir", "--model fine-tuned, none there", ["--run", "{run}", "--model", "fine-tuned"], base="ann",
             prepare=_remove("fine_tuned.json", "fine_tuned.weights.h5")))
    add(Case("export_nir", "SNN weights swapped", ["--run", "{run}"], base="ann", prepare=_perturb("snn.weights.h5")))
    # report
    add(Case("report", "no run directory", ["{work}/none", "--out", "{work}/report"]))
    add(Case("report", "two runs of one name", ["{run}", "{work}/other/run", "--out", "{work}/report"], base="ann"))
    add(Case("report", "unknown device", ["{run}", "--out", "{work}/report", "--devices", "tpu"], base="ann"))
    add(Case("report", "--out is a file", ["{run}", "--out", "{work}/file"], base="ann",
             prepare=lambda r, w: (w / "file").write_text("x")))
    add(Case("report", "run without its SNN", ["{run}", "--out", "{work}/report"], base="ann", expect="warning",
             prepare=_remove("snn.json", "snn.weights.h5")))  # issue 33: its ANN is reported, the SNN named missing
    add(Case("report", "report there, no --overwrite", ["{run}", "--out", "{work}/report"], base="ann",
             prepare=lambda r, w: (w / "report").mkdir() or (w / "report" / "report.html").write_text("x")))
    # issue 33: the run directory is ours or refused (ownership, --overwrite, outputs on inputs, --resume)
    def _users_files(run, work):
        for relative in ("checkpoints/my_model.pt", "tensorboard/events.user"):
            (run / relative).parent.mkdir(parents=True, exist_ok=True)
            (run / relative).write_bytes(b"the user's own")
    add(Case("train_ann", "--overwrite on a folder of the user's own checkpoints and logs",
             ["--run", "{run}", "--dataset", "{data}", *tiny, "--overwrite"], prepare=_users_files))
    add(Case("run_all", "--overwrite on a folder of the user's own checkpoints and logs",
             ["--run", "{run}", "--dataset", "{data}", *tiny, "--overwrite"], prepare=_users_files))
    for name in ("ann.weights.h5", "config.json"):
        add(Case("export_nir", f"--out on the run's own {name}, --overwrite",
                 ["--run", "{run}", "--out", "{run}/" + name, "--overwrite"], base="ann"))
    for flags, name in [(["--devices", "tpu"], "unknown device"), (["--timesteps", "1000000"], "T 1000000")]:
        add(Case("run_all", f"--overwrite, {name} (a later stage's flag)",
                 ["--run", "{run}", "--dataset", "{data}", *tiny, "--overwrite", *flags], base="ann"))
    for relative in ("summary.md", "report/report.html"):
        add(Case("run_all", f"the user's own {relative} in the run directory",
                 ["--run", "{run}", "--dataset", "{data}", *tiny],
                 prepare=lambda run, work, relative=relative: (run / relative).parent.mkdir(parents=True) or
                 (run / relative).write_text("the user's own")))
    add(Case("run_all", "--resume with a flag that differs from the recorded run",
             ["--run", "{run}", "--resume", "--epochs", "5"], base="ann"))
    add(Case("train_ann", "--run a dangling symlink", ["--run", "{work}/link", "--dataset", "{data}", *tiny],
             prepare=lambda run, work: (work / "link").symlink_to(work / "nowhere")))
    add(Case("train_ann", "--run under a file", ["--run", "{work}/file/run", "--dataset", "{data}", *tiny],
             prepare=lambda run, work: (work / "file").write_text("x")))
    add(Case("run_all", "--run of a 300-character name",
             ["--run", "{work}/" + "r" * 300, "--dataset", "{data}", *tiny]))
    # issue 33: data decoding and training flags
    for flags, name in [(["--split", "0.9", "0.1", "0"], "split with no test images"), (["--seed", "-1"], "seed -1"),
                        (["--seed", "99999999999"], "seed above 2**32 - 1"),
                        (["--image-size", "6400"], "image size 6400: too much memory")]:
        add(Case("train_ann", name, ["--run", "{work}/new", "--dataset", "{data}", *tiny, *flags]))
    for kind, expect in [("a decompression bomb", "error"), ("a 12000x12000 image", "error"),
                         ("a 4-band tiff named .png", "error"), ("a class folder symlink loop", "error"),
                         ("an image symlink loop", "error"), ("hidden folders", "warning")]:
        add(Case("train_ann", f"dataset with {kind}", ["--run", "{work}/new", "--dataset", "{work}/bad", *tiny],
                 prepare=_odd_data(kind), expect=expect))
    # issue 33: report, export, energy profiles, predict
    odd = r"$\alpha_$ <img src=x onerror=alert(1)>"  # invalid math text and markup as a run's name
    add(Case("report", "run name with math text and markup", [f"{{work}}/{odd}", "--out", "{work}/report"],
             base="ann", expect="ok", prepare=lambda r, w: shutil.copytree(r, w / odd, symlinks=True)))
    add(Case("report", "--out on a read-only place", ["{run}", "--out", "/sys/snn4vision-report"], base="ann"))

    def profile(value):  # a folder {work}/profiles of one profile whose energy_per_neuron is ``value``
        return lambda r, w: ((w / "profiles").mkdir(), (w / "profiles" / "chip.toml").write_text(
            f'name = "chip"\nspiking = true\nenergy_per_synop = 1e-12\nenergy_per_neuron = {value}\n'))
    for value, name in [('"5e-12"', "profile value a string"), ("-5e-12", "profile value negative")]:
        add(Case("energy_estimation", name, ["--run", "{run}", "--overwrite", "--profiles", "{work}/profiles"],
                 base="ann", prepare=profile(value)))
    add(Case("report", "profile value negative", ["{run}", "--out", "{work}/report", "--profiles", "{work}/profiles"],
             base="ann", prepare=profile("-5e-12")))
    add(Case("convert_snn", "dt 1e-40", ["--run", "{run}", "--overwrite", "--dt", "1e-40"], base="ann"))
    add(Case("convert_snn", "max rate 1e300: a NaN SNN", ["--run", "{run}", "--overwrite", "--no-sweep", "--timesteps",
                                                          "2", "--max-rate", "1e300"], base="ann"))
    # issue 33: cluster config and run files
    def _free_port() -> int:
        with __import__("socket").socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    def _holding(port: int) -> Callable:  # another process's listener on a worker's port, during the command
        def prepare(run, work):
            held = __import__("socket").socket()
            held.bind(("", port))
            held.listen()
            return held
        return prepare

    def _workers(*addresses, index=0) -> dict:
        return {"TF_CONFIG": json.dumps({"cluster": {"worker": list(addresses)},
                                         "task": {"type": "worker", "index": index}})}

    taken, alone, absent = _free_port(), _free_port(), _free_port()
    for name, env, prepare in [
            ("TF_CONFIG a JSON list", {"TF_CONFIG": '["127.0.0.1:1"]'}, None),
            ("TF_CONFIG without a task", {"TF_CONFIG": json.dumps({"cluster": {"worker": ["h:1", "h:2"]}})}, None),
            ("TF_CONFIG worker address without a port", _workers("127.0.0.1", "127.0.0.1:2"), None),
            ("worker port in use", _workers(f"127.0.0.1:{taken}", "127.0.0.1:2"), _holding(taken)),
            ("a worker that never starts", _workers(f"127.0.0.1:{alone}", f"127.0.0.1:{absent}") |
             {"SNN4VISION_WORKER_TIMEOUT": "3"}, None)]:
        add(Case("train_ann", name, ["--run", "{work}/new", "--dataset", "{data}", *tiny], env=env, prepare=prepare))
    add(Case("predict", "emptied config.json", ["--run", "{run}", image], base="ann", prepare=_write("config.json", b"{}")))
    add(Case("predict", "classes.json not UTF-8", ["--run", "{run}", image], base="ann",
             prepare=_write("classes.json", b'["\xff\xfe"]')))
    add(Case("report", "emptied metrics.json", ["{run}", "--out", "{work}/report"], base="ann",
             prepare=_write("metrics.json", b"{}")))
    # --- issue 31 ---
    # multi-band GeoTIFF folders ({work}/ms: 2 classes x 8 images of 32 x 32 x 13 uint16 bands) with one fault each; the run
    # goes to {run}, so a refusal that left anything there (an empty folder, a config.json) is judged "left"
    ms_tiny = ["--image-size", "32", "--width", "0.125", "--epochs", "1", "--batch-size", "4", "--split", "0.5",
               "0.25", "0.25"]

    def _multiband(kind: str) -> Callable:
        def prepare(run, work):
            import numpy as np
            import tifffile

            rng = np.random.default_rng(0)
            dtype = np.float32 if kind == "NaN pixels in a float tiff" else np.uint16
            for c, name in enumerate(("bare", "crops")):
                (work / "ms" / name).mkdir(parents=True)
                for i in range(8):
                    array = rng.normal(2000 + 1000 * c, 300, (32, 32, 13)).astype(dtype)
                    tifffile.imwrite(work / "ms" / name / f"{name}{i}.tif", array, photometric="minisblack",
                                     planarconfig="contig")
            odd = work / "ms" / "crops" / "odd.tif"
            if kind == "mixed band counts":
                tifffile.imwrite(odd, np.zeros((32, 32, 12), np.uint16), photometric="minisblack",
                                 planarconfig="contig")
            elif kind == "NaN pixels in a float tiff":
                array = np.full((32, 32, 13), 2000.0, np.float32)
                array[3, 4, 7] = np.nan
                tifffile.imwrite(odd, array, photometric="minisblack", planarconfig="contig")
            elif kind == "a 20000x20000 tiff":  # a small file whose header declares 20000 x 20000 x 13 bands
                tifffile.imwrite(odd, np.zeros((4, 4, 13), np.uint16), photometric="minisblack", planarconfig="contig")
                with tifffile.TiffFile(odd) as tiff:
                    tags = tiff.pages[0].tags
                    spots = [(tags[n].valueoffset, int(tags[n].dtype)) for n in ("ImageWidth", "ImageLength")]
                raw = bytearray(odd.read_bytes())
                for offset, tag_type in spots:
                    size = 2 if tag_type == 3 else 4
                    raw[offset:offset + size] = (20000).to_bytes(size, "little")
                odd.write_bytes(bytes(raw))
            if kind == "a file with other bands, to predict":  # a finished 1-epoch run on the good folder first
                result = _run("train_ann", ["--run", str(run), "--dataset", str(work / "ms"), *ms_tiny])
                if result.returncode != 0:
                    raise SystemExit(f"training the multi-band run failed:\n{result.stderr[-2000:]}")
                tifffile.imwrite(work / "twelve.tif", np.zeros((32, 32, 12), np.uint16), photometric="minisblack",
                                 planarconfig="contig")
        return prepare

    for kind, flags in [("mixed band counts", []), ("--bands index out of range", ["--bands", "4,3,2,14"]),
                        ("--bands 0", ["--bands", "0,1"]), ("NaN pixels in a float tiff", []),
                        ("a 20000x20000 tiff", [])]:
        add(Case("train_ann", f"multi-band folder: {kind}", ["--run", "{run}", "--dataset", "{work}/ms", *ms_tiny,
                                                             *flags], prepare=_multiband(kind)))
    add(Case("train_ann", "--bands on RGB images", ["--run", "{run}", "--dataset", "{data}", *tiny, "--bands", "1,2"]))
    add(Case("predict", "multi-band run, a file with 12 bands", ["--run", "{run}", "{work}/twelve.tif"],
             prepare=_multiband("a file with other bands, to predict")))
    # --- end issue 31 ---
    return c


# ------------------------------------------------------------------ judging
def judge(case: Case, result, before: dict, after: dict) -> tuple:
    err = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("error:") or ": error: " in line]
    warnings = [line for line in err if line.startswith("warning:")]
    if "Traceback" in result.stderr or result.returncode not in (0, 2, 130):
        return "traceback", (err[-1] if err else f"exit {result.returncode}")
    if case.expect != "error":
        if result.returncode != 0:
            return "refused", errors[0] if errors else err[-1]
        if case.expect == "warning" and not warnings:
            return "silent", "(no warning)"
        return ("warned" if warnings else "ok"), (warnings[0] if warnings else result.stdout.strip().splitlines()[-1])
    if result.returncode == 0:
        return "silent", (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    lost = [k for k, v in before.items() if after.get(k) != v]
    if lost:
        return "lost", f"{errors[0] if errors else err[-1]} [changed or gone: {', '.join(sorted(lost)[:4])}]"
    left = sorted(set(after) - set(before))
    if left:
        return "left", f"{errors[0] if errors else err[-1]} [left: {', '.join(left[:4])}]"
    noise = [line for line in err if line not in errors and not line.startswith(("usage:", " ", "warning:"))]
    if len(errors) != 1 or noise:
        return "noisy", " / ".join(err[:3])
    return "clean", errors[0]


def run_case(case: Case, bases: dict, work_root: Path) -> dict:
    work = Path(tempfile.mkdtemp(dir=work_root))
    run = work / "run"
    if case.base:
        shutil.copytree(bases[case.base], run, symlinks=True)
    holder = None
    if case.prepare:
        holder = case.prepare(run, work)
    before = _snapshot(run)
    argv = [a.format(run=run, data=bases["data"], work=work) for a in case.argv]
    began = time.perf_counter()
    try:
        result = _run(case.stage, argv, case.env)
    finally:
        if isinstance(holder, subprocess.Popen):
            holder.kill()
    seconds = time.perf_counter() - began
    verdict, message = judge(case, result, before, _snapshot(run))
    shutil.rmtree(work, ignore_errors=True)
    message = message.replace(str(work), "W").replace(str(bases["data"]), "DATA").replace(str(ROOT), ".")
    return {"stage": case.stage, "input": case.name, "exit": result.returncode, "verdict": verdict,
            "message": message[:220], "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="+", help="run only cases whose stage or name contains one of these texts")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bad_inputs.md"))
    args = parser.parse_args()
    selected = [c for c in cases() if not args.only or any(t in c.stage or t in c.name for t in args.only)]
    work_root = Path(tempfile.mkdtemp(prefix="snn4vision-bad-inputs-"))
    began = time.perf_counter()
    try:
        bases = build_bases(work_root)
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(lambda case: run_case(case, bases, work_root), selected))
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    counts = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    lines = ["# Bad inputs against every pipeline script (issues 13 and 33)", "",
             f"`{Path(PYTHON).name} benchmarks/bad_inputs.py` on {time.strftime('%Y-%m-%d')}: {len(rows)} commands in "
             f"{time.perf_counter() - began:.0f} s. Verdicts: "
             + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".", "",
             "Paths: `W` is the case's scratch folder (its run is `W/run`), `DATA` a 4-class subset of UC Merced.", "",
             "| stage | input | exit | verdict | message |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['stage']} | {row['input']} | {row['exit']} | {row['verdict']} | "
                     f"{row['message'].replace('|', '/')} |")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(json.dumps(counts))
    bad = [r for r in rows if r["verdict"] in ("traceback", "silent", "lost", "left", "noisy", "refused")]
    for row in bad:
        print(f"{row['verdict']:>9}  {row['stage']}: {row['input']}: {row['message']}")


if __name__ == "__main__":
    main()

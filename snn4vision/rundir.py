"""The run directory: the contract between pipeline stages.

Each stage reads what earlier stages wrote and adds its own files; a stage
that finds something missing names the file and the stage that makes it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from .checkpoints import atomic_write_json, read_json
from .errors import UserError

CONFIG = "config.json"
CLASSES = "classes.json"
SPLIT = "split.json"
ANN_WEIGHTS = "ann.weights.h5"
TRANSFORMER_WEIGHTS = "transformer.weights.h5"
SNN_CONFIG = "snn.json"
SNN_WEIGHTS = "snn.weights.h5"
CONVERSION = "conversion.json"
CONVERSION_PLOT = "conversion.png"
FINE_TUNED_CONFIG = "fine_tuned.json"
FINE_TUNED_WEIGHTS = "fine_tuned.weights.h5"
FINE_TUNE = "fine_tune.json"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
ENERGY_JSON = "energy.json"
ENERGY_CSV = "energy.csv"
ENERGY_PLOT = "energy.png"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
STALE = "stale"

#: What each stage's results feed, in pipeline order: re-running a stage makes all of these stale.
_SUMMARY = [SUMMARY_JSON, SUMMARY_MD]
_ENERGY = [ENERGY_JSON, ENERGY_CSV, ENERGY_PLOT]
_FINE_TUNED = [FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, FINE_TUNE, f"{CHECKPOINTS}/fine_tune", f"{TENSORBOARD}/fine_tune"]
_CONVERTED = [SNN_CONFIG, SNN_WEIGHTS, CONVERSION, CONVERSION_PLOT]
DOWNSTREAM = {
    "train": _CONVERTED + _FINE_TUNED + _ENERGY + _SUMMARY,
    "convert": _FINE_TUNED + _ENERGY + _SUMMARY,
    "fine_tune": _ENERGY + _SUMMARY,
    "energy": _SUMMARY,
}

#: Which stage writes each file, for error messages.
MADE_BY = {
    CONFIG: "pipelines/train_ann.py",
    CLASSES: "pipelines/train_ann.py",
    SPLIT: "pipelines/train_ann.py",
    ANN_WEIGHTS: "pipelines/train_ann.py",
    METRICS: "pipelines/train_ann.py",
    TRANSFORMER_WEIGHTS: "pipelines/train_spiking_transformer.py",
    SNN_CONFIG: "pipelines/convert_snn.py",
    SNN_WEIGHTS: "pipelines/convert_snn.py",
    CONVERSION: "pipelines/convert_snn.py",
    FINE_TUNED_CONFIG: "pipelines/fine_tune.py",
    FINE_TUNED_WEIGHTS: "pipelines/fine_tune.py",
    FINE_TUNE: "pipelines/fine_tune.py",
}


def require(run_dir: Path, *names: str) -> None:
    """Raise a UserError naming the first missing file and the stage that makes it."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run {run_dir} is a file, not a run directory: pass a directory")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: run pipelines/train_ann.py --run {run_dir} first")
    for name in names:
        if not (run_dir / name).exists():
            if (run_dir / TRANSFORMER_WEIGHTS).exists():
                raise UserError(f"{run_dir} holds a directly trained spiking transformer ({TRANSFORMER_WEIGHTS}), "
                                f"which is already a spiking network and has no {name}: there is no ANN to convert "
                                "or fine-tune; cost it with pipelines/energy_estimation.py")
            maker = MADE_BY.get(name, "the stage that makes it")
            raise UserError(f"{run_dir} has no {name}: run {maker} --run {run_dir} first")


PROVENANCE = "provenance.json"
#: The script behind each stage name, for messages.
STAGE_SCRIPTS = {"train": "pipelines/train_ann.py", "train_transformer": "pipelines/train_spiking_transformer.py",
                 "convert": "pipelines/convert_snn.py", "fine_tune": "pipelines/fine_tune.py",
                 "energy": "pipelines/energy_estimation.py"}


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_outputs(run_dir: Path, stage: str, outputs: list[str], inputs: list[str]) -> None:
    """Note in ``provenance.json`` the hash of each output of ``stage`` and of the inputs it was made from."""
    run_dir = Path(run_dir)
    path = run_dir / PROVENANCE
    entries = read_json(path) if path.is_file() else {}
    made_from = {name: file_hash(run_dir / name) for name in inputs if (run_dir / name).is_file()}
    for name in outputs:
        entries[name] = {"stage": stage, "sha256": file_hash(run_dir / name), "inputs": made_from}
    atomic_write_json(path, entries)


def check_inputs(run_dir: Path, names: list[str]) -> None:
    """Refuse to read outputs of an earlier stage that were changed, or whose own inputs changed, since they were
    made (a re-trained ANN under an old SNN, a weights file copied in from another run). Files without a
    record (runs from before provenance.json) are taken as they are."""
    run_dir = Path(run_dir)
    path = run_dir / PROVENANCE
    entries = read_json(path) if path.is_file() else {}
    hashes = {}  # the outputs of one stage share their inputs: hash each file once

    def current(name: str) -> str | None:
        if name not in hashes:
            hashes[name] = file_hash(run_dir / name) if (run_dir / name).is_file() else None
        return hashes[name]

    for name in names:
        entry = entries.get(name)
        if entry is None or current(name) is None:
            continue
        script = STAGE_SCRIPTS.get(entry["stage"], entry["stage"])
        fix = f"re-run {script} --run {run_dir} --overwrite"
        if current(name) != entry["sha256"]:
            if not _readable(run_dir / name):
                raise UserError(f"{name} in {run_dir} is damaged or incomplete (it changed since {script} wrote it "
                                f"and no longer reads): {fix}")
            raise UserError(f"{name} in {run_dir} has changed since {script} wrote it (edited, or copied in from "
                            f"another run?): {fix}")
        for source, digest in entry["inputs"].items():
            if current(source) != digest:
                raise UserError(f"{name} in {run_dir} was made from {source}, which has changed since (re-trained "
                                f"or replaced): {fix}")


def _readable(path: Path) -> bool:
    """Whether a JSON or HDF5 file still parses (a truncated or overwritten one does not)."""
    try:
        if path.suffix == ".json":
            read_json(path)
        elif path.suffix == ".h5":
            import h5py

            with h5py.File(path, "r"):
                pass
        return True
    except (UserError, OSError):
        return False


def prepare_new(run_dir: Path, outputs: list[str], resume: bool, overwrite: bool, resumable: bool = True,
                stage: str | None = None) -> None:
    """Make sure a stage may write ``outputs`` into ``run_dir``.

    A stage never silently replaces earlier results: if any output exists and
    neither ``resume`` nor ``overwrite`` is set, it stops with a UserError.
    With ``overwrite`` the old outputs, and those of later stages that were
    made from them (``DOWNSTREAM[stage]``), are moved aside. Inside
    :func:`replacing` they come back if the stage fails; once it succeeds the
    old outputs are deleted and the later stages' go to ``stale/<time>/``.
    Outside it, that happens at once.
    """
    run_dir = Path(run_dir)
    make(run_dir)
    present = [name for name in outputs if (run_dir / name).exists()]
    transaction = _transactions.get(str(run_dir.resolve()))
    if transaction is not None and not resumable:  # a failed stage that cannot resume leaves no half of its outputs
        transaction.new_outputs += [name for name in outputs if name not in present]
    if not present or resume:
        return
    if not overwrite:
        resume_hint = "--resume to continue that run, " if resumable else ""
        raise UserError(
            f"{run_dir} already holds {', '.join(present)}: pass {resume_hint}"
            "--overwrite to replace it, or choose another --run directory"
        )
    downstream = [name for name in DOWNSTREAM.get(stage, []) if (run_dir / name).exists()
                  and not any(name == p or name.startswith(p + "/") for p in present)]
    if transaction is not None:
        transaction.set_aside(present, downstream)
    else:
        transaction = _Replacement(run_dir)
        transaction.set_aside(present, downstream)
        transaction.commit()


class _Replacement:
    """Outputs moved aside by ``--overwrite`` until the stage that replaces them has finished."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.aside = run_dir / f"{STALE}/.replacing-{os.getpid()}"
        self.replaced, self.downstream = [], []
        self.new_outputs = []  # outputs the stage writes that are removed if it fails

    def set_aside(self, replaced: list, downstream: list) -> None:
        for name in replaced + downstream:
            target = self.aside / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.run_dir / name, target)
        self.replaced += replaced
        self.downstream += downstream

    def commit(self) -> None:
        """Delete the replaced outputs; keep the later stages' under ``stale/<time>/`` and say so."""
        if self.downstream:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            stale = self.run_dir / STALE / stamp
            for name in self.downstream:
                (stale / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.aside / name, stale / name)
            print(f"moved the outputs made from the replaced ones to {stale}: {', '.join(self.downstream)}",
                  flush=True)
        if self.aside.exists():
            shutil.rmtree(self.aside)

    def restore(self) -> None:
        """Put everything back as it was (the new, incomplete outputs are removed)."""
        for name in self.new_outputs:
            path = self.run_dir / name
            if path.exists() and name not in self.replaced + self.downstream:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for name in self.replaced + self.downstream:
            path = self.run_dir / name
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.aside / name, path)
        if self.aside.exists():
            shutil.rmtree(self.aside)


_transactions: dict = {}  # resolved run directory -> the _Replacement of the stage running in it


@contextlib.contextmanager
def replacing(run_dir: Path) -> Iterator[None]:
    """Run a stage so that ``--overwrite`` loses nothing: outputs it sets aside come back if the stage fails
    (a bad flag found late, a full disk, Ctrl-C) and are dropped only once it has finished."""
    key = str(Path(run_dir).resolve())
    if key in _transactions:  # nested (run_all's stages): the outer one decides
        yield
        return
    transaction = _Replacement(Path(run_dir))
    _transactions[key] = transaction
    try:
        yield
    except BaseException:
        transaction.restore()
        raise
    else:
        transaction.commit()
    finally:
        del _transactions[key]


def make(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents), turning the usual failures into one-line UserErrors."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run {run_dir} is a file, not a run directory: pass a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise UserError(f"cannot create the run directory {run_dir} (permission denied): choose a --run "
                        "directory you can write to") from None
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"the run directory {run_dir} is read-only: make it writable or choose another --run")


LOCK = ".lock"
_held: dict = {}  # resolved run directory -> [open lock file, depth]


@contextlib.contextmanager
def locked(run_dir: Path, create: bool = True) -> Iterator[None]:
    """Hold an advisory lock on ``run_dir`` while a stage writes into it.

    A second process that asks for it fails at once with a UserError naming
    the PID that holds it; the same process may nest (run_all holds it across
    its stages). The kernel releases the lock when the process dies, so a
    killed run never leaves a stale lock. Without ``create``, a missing
    ``run_dir`` is left for the stage to report (nothing to lock).
    """
    if not create and not Path(run_dir).is_dir():
        yield
        return
    created = not Path(run_dir).exists()
    make(run_dir)
    key = str(Path(run_dir).resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    handle = open(Path(run_dir) / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{run_dir} is in use by process {holder} (another stage or run writing into it): wait "
                        "for it to finish, or choose another --run directory") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _held[key] = [handle, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            del _held[key]
            handle.truncate(0)
            if created and [p.name for p in Path(run_dir).iterdir()] == [LOCK]:  # refused before writing anything
                os.unlink(Path(run_dir) / LOCK)
                os.rmdir(run_dir)
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

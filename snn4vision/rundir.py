"""The run: the one module every stage builds on.

- The run directory, the contract between pipeline stages: each stage reads
  what earlier stages wrote and adds its own files; a stage that finds
  something missing names the file and the stage that makes it (file names,
  ``--overwrite``, the lock, provenance).
- The run's config (:class:`TrainConfig`, saved as ``config.json``) and data
  (:class:`RunData`, :func:`open_run`).
- The loaders of what the stages wrote: :func:`load_trained_model`,
  :func:`load_ann`, :func:`load_snn`, :func:`load_fine_tuned`,
  :func:`load_trained`.

Stages import this module and never each other.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from . import bands, data, edges, events, models, resources
from .checkpoints import atomic_write_json, load_variables, load_weights, read_json
from .errors import UserError
from .simulation import SpikingNetwork
from .transformers import SpikingTransformer

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
REPORT = "report"  # run_all's report of its run (pipelines/report.py)
NIR_FILE = "snn.nir"
NIR_REPORT = "nir_export.json"
STALE = "stale"

#: What each stage's results feed, in pipeline order: re-running a stage makes all of these stale.
_SUMMARY = [SUMMARY_JSON, SUMMARY_MD, REPORT]
_ENERGY = [ENERGY_JSON, ENERGY_CSV, ENERGY_PLOT]
_FINE_TUNED = [FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, FINE_TUNE, f"{CHECKPOINTS}/fine_tune", f"{TENSORBOARD}/fine_tune"]
_CONVERTED = [SNN_CONFIG, SNN_WEIGHTS, CONVERSION, CONVERSION_PLOT]
_EXPORTED = [NIR_FILE, NIR_REPORT]
DOWNSTREAM = {
    "train": _CONVERTED + _FINE_TUNED + _ENERGY + _SUMMARY + _EXPORTED,
    "convert": _FINE_TUNED + _ENERGY + _SUMMARY + _EXPORTED,
    "fine_tune": _ENERGY + _SUMMARY + _EXPORTED,
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
    if exists(run_dir) and not run_dir.is_dir():
        raise UserError(f"--run {run_dir} is a file, not a run directory: pass a directory")
    if not exists(run_dir):
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
                 "energy": "pipelines/energy_estimation.py", "export_nir": "pipelines/export_nir.py",
                 "run_all": "pipelines/run_all.py"}


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


#: What the project writes inside its output folders (each stage's checkpoints and logs, run_all's report and
#: stage times; report_pages.FIGURES): anything else there is the user's, never moved or deleted.
OWN_CONTENTS = {CHECKPOINTS: ("ann", "spikformer", "sdt", "fine_tune", "pipeline.json"),
                TENSORBOARD: ("ann", "spikformer", "sdt", "fine_tune"),
                REPORT: ("report.html", "report.md", "report.json", "accuracy_vs_timesteps.png",
                         "accuracy_vs_energy.png", "firing_rates.png", "per_class_accuracy.png",
                         "confusion_matrices.png")}


def foreign_files(run_dir: Path, names: list[str]) -> list[str]:
    """The entries of the output folders among ``names`` that no stage wrote (a user's own
    ``checkpoints/my_model.pt``); a stage's own sub-folder (``checkpoints/ann``) is the stage's throughout."""
    found = []
    for name in names:
        folder = Path(run_dir) / name
        if name in OWN_CONTENTS and folder.is_dir() and not folder.is_symlink():
            found += [f"{name}/{entry.name}" for entry in sorted(folder.iterdir())
                      if entry.name not in OWN_CONTENTS[name] and not entry.name.startswith(".tmp-")]
        elif name in OWN_CONTENTS and folder.is_symlink():  # moving it would move the user's folder it points to
            found.append(name)
    return found


def prepare_new(run_dir: Path, outputs: list[str], resume: bool, overwrite: bool, resumable: bool = True,
                stage: str | None = None) -> None:
    """Make sure a stage may write ``outputs`` into ``run_dir``.

    A stage never silently replaces earlier results: if any output exists and
    neither ``resume`` nor ``overwrite`` is set, it stops with a UserError.
    With ``overwrite`` the old outputs, and those of later stages that were
    made from them (``DOWNSTREAM[stage]``), are moved aside. Inside
    :func:`replacing` they come back if the stage fails; once it succeeds the
    old outputs are deleted and the later stages' go to ``stale/<time>/``.
    Outside it, that happens at once. Files the project did not write
    (:func:`foreign_files`) are never moved: their presence is refused, with or without ``overwrite``.
    """
    run_dir = Path(run_dir)
    make(run_dir)
    present = [name for name in outputs if (run_dir / name).exists()]
    transaction = _transactions.get(str(run_dir.resolve()))
    if transaction is not None and not resumable:  # a failed stage that cannot resume leaves no half of its outputs
        transaction.new_outputs += [name for name in outputs if name not in present]
    if not present or resume:
        return
    downstream = [name for name in DOWNSTREAM.get(stage, []) if (run_dir / name).exists()
                  and not any(name == p or name.startswith(p + "/") for p in present)]
    refuse_foreign(run_dir, present + downstream)
    if not overwrite:
        resume_hint = "--resume to continue that run, " if resumable else ""
        raise UserError(
            f"{run_dir} already holds {', '.join(present)}: pass {resume_hint}"
            "--overwrite to replace it, or choose another --run directory"
        )
    if transaction is not None:
        transaction.set_aside(present, downstream)
    else:
        transaction = _Replacement(run_dir)
        transaction.set_aside(present, downstream)
        transaction.commit()


ASIDE = ".replacing-"  # stale/.replacing-<pid>: what the --overwrite of process <pid> set aside
ASIDE_NOTE = ".aside.json"  # in that folder, until the stage commits: what to put back if it never finishes


def refuse_foreign(run_dir: Path, names: list) -> None:
    """Refuse in one line files under ``names`` that the project did not write (:func:`foreign_files`): nothing
    moves or deletes them, so no --overwrite is suggested."""
    foreign = foreign_files(run_dir, names)
    if foreign:
        what = "it" if len(foreign) == 1 else "them"
        raise UserError(f"{run_dir} holds {', '.join(foreign)}, which this project did not write and never moves "
                        f"or deletes: move {what} out of {run_dir}, or choose another --run directory")


class _Replacement:
    """Outputs moved aside by ``--overwrite`` until the stage that replaces them has finished."""

    def __init__(self, run_dir: Path, aside: Path | None = None,
                 what: str = "the outputs made from the replaced ones"):
        self.run_dir = run_dir
        self.what = what  # the later stages' outputs, as the message that they were kept under stale/ says
        self.aside = aside or run_dir / STALE / f"{ASIDE}{os.getpid()}"
        self.replaced, self.downstream = [], []
        self.new_outputs = []  # outputs the stage writes that are removed if it fails

    def set_aside(self, replaced: list, downstream: list) -> None:
        self.replaced += replaced
        self.downstream += downstream
        # noted before anything moves: a process killed from here on leaves what the next command needs to undo it
        self.aside.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.aside / ASIDE_NOTE, {"replaced": self.replaced, "downstream": self.downstream,
                                                    "new_outputs": self.new_outputs})
        for name in replaced + downstream:
            target = self.aside / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.run_dir / name, target)

    def commit(self) -> None:
        """Delete the replaced outputs; keep the later stages' under ``stale/<time>/`` and say so."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.aside / ASIDE_NOTE)  # the new outputs stand from here: nothing to put back
        if self.downstream:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            stale = self.run_dir / STALE / stamp
            for name in self.downstream:
                (stale / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.aside / name, stale / name)
            print(f"moved {self.what} to {stale}: {', '.join(self.downstream)}", flush=True)
        self._clean()

    def restore(self) -> None:
        """Put everything back as it was (the new, incomplete outputs are removed)."""
        for name in self.new_outputs:
            path = self.run_dir / name
            if path.exists() and name not in self.replaced + self.downstream:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for name in self.replaced + self.downstream:
            if not (self.aside / name).exists():  # killed before it was moved: still in place
                continue
            path = self.run_dir / name
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.aside / name, path)
        self._clean()

    def _clean(self) -> None:
        """Remove the emptied aside folder, and ``stale/`` when nothing else is in it."""
        if self.aside.exists():
            shutil.rmtree(self.aside)
        with contextlib.suppress(OSError):  # not empty: it keeps earlier stale outputs
            (self.run_dir / STALE).rmdir()


def set_aside_stale(run_dir: Path, names: list[str], what: str) -> None:
    """Move ``names`` (``what`` they are, for the message) to ``stale/<time>/`` at once, saying so."""
    transaction = _Replacement(Path(run_dir), what=what)
    transaction.set_aside([], names)
    transaction.commit()


def recover(run_dir: Path) -> None:
    """Undo the ``--overwrite`` of a process killed before its stage finished (``stale/.replacing-<pid>``): put
    the earlier outputs back, or, where no note says what they were, name them and the way back. The caller
    holds the run's lock, so no other stage is using them."""
    stale = Path(run_dir) / STALE
    if not stale.is_dir():
        return
    for aside in sorted(stale.glob(f"{ASIDE}*")):
        pid = aside.name[len(ASIDE):]
        if not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
            continue
        try:
            note = read_json(aside / ASIDE_NOTE)
        except UserError:  # killed while committing, or an older version's: the user decides
            entries = ", ".join(sorted(p.name for p in aside.iterdir()))
            data.warn(f"{aside} holds {entries}, set aside by an --overwrite (process {pid}) that did not finish: "
                      f"move them back into {run_dir} to restore the earlier results, or delete {aside}")
            continue
        transaction = _Replacement(Path(run_dir), aside)
        transaction.replaced, transaction.downstream = note["replaced"], note["downstream"]
        transaction.new_outputs = note["new_outputs"]
        back = [name for name in transaction.replaced + transaction.downstream if (aside / name).exists()]
        transaction.restore()
        data.warn(f"put back {', '.join(back) or 'nothing'} in {run_dir}: an --overwrite (process {pid}) was "
                  f"interrupted after setting them aside, and its incomplete outputs were removed")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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


def exists(path: Path) -> bool:
    """``path.exists()`` that takes a name the filesystem cannot hold (too long) as absent."""
    try:
        return Path(path).exists()
    except OSError:
        return False


def make(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents), turning the usual failures into one-line UserErrors."""
    run_dir = Path(run_dir)
    try:
        if run_dir.is_symlink() and not run_dir.exists():
            raise UserError(f"--run {run_dir} is a symbolic link to {os.readlink(run_dir)}, which does not exist: "
                            "create its target, or choose another --run directory")
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--run {run_dir} is a file, not a run directory: pass a directory")
        run_dir.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise UserError(f"cannot create the run directory {run_dir} (permission denied): choose a --run "
                        "directory you can write to") from None
    except OSError as exc:
        raise UserError(f"cannot create the run directory {run_dir}: {_unmakeable(run_dir, exc)}") from None
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"the run directory {run_dir} is read-only: make it writable or choose another --run")


def _unmakeable(run_dir: Path, exc: OSError) -> str:
    """Why ``mkdir`` failed on ``run_dir``, and the fix."""
    if exc.errno == errno.ENAMETOOLONG:
        longest = max(run_dir.parts, key=len)
        return (f"a name in it is {len(longest)} characters long ({longest[:20]}...), more than the filesystem "
                "allows (usually 255): choose a shorter --run")
    for parent in run_dir.parents:
        if parent.is_symlink() and not exists(parent):
            return (f"{parent} is a symbolic link to {os.readlink(parent)}, which does not exist: create its "
                    "target, or choose another --run directory")
        if exists(parent) and not parent.is_dir():
            return f"{parent} is a file, not a folder: choose another --run directory"
    return f"{exc.strerror or exc}: choose another --run directory"


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
    if not create and not (exists(run_dir) and Path(run_dir).is_dir()):
        yield
        return
    created = not exists(run_dir)
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
        recover(Path(run_dir))
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


#: The names at the top of a run directory that its stages read and write, and its bookkeeping.
RUN_NAMES = frozenset(MADE_BY) | frozenset(n.split("/")[0] for names in DOWNSTREAM.values() for n in names) | {
    TRANSFORMER_WEIGHTS, CHECKPOINTS, TENSORBOARD, PROVENANCE, LOCK, STALE}


def owned_name(run_dir: Path, path: Path) -> str | None:
    """The name in ``run_dir`` of the run's own file that ``path`` is or lies in (an input or output of a stage,
    one provenance.json names, the lock, the logs), or None."""
    try:
        relative = Path(path).resolve().relative_to(Path(run_dir).resolve())
    except ValueError:
        return None
    if not relative.parts:
        return "."
    if relative.parts[0] in RUN_NAMES or written_by(run_dir, relative.as_posix()) is not None:
        return relative.as_posix()
    return None


def written_by(run_dir: Path, name: str) -> str | None:
    """The stage that provenance.json says wrote ``name``, or None."""
    path = Path(run_dir) / PROVENANCE
    entry = (read_json(path) if path.is_file() else {}).get(name)
    return entry["stage"] if entry else None


# --------------------------------------------------------------------------
# The run's config and loaders
# --------------------------------------------------------------------------
OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd")
#: ANNs that train_ann.py trains and convert_snn.py converts.
ANN_ARCHITECTURES = ("vgg16", "resnet18", "resnet20")
#: The ANNs, then the spiking transformers that train_spiking_transformer.py trains directly.
ARCHITECTURES = ANN_ARCHITECTURES + ("spikformer", "sdt")
LR_SCHEDULES = ("plateau", "cosine")


#: Named configurations of train_ann.py and run_all.py; explicit flags override them, and
#: :meth:`TrainConfig.from_preset` adds the defaults that follow from the flags.
PRESETS = {
    # SNN4Space: ImageNet-pretrained VGG-16 at 224x224, RMSprop 1e-3, plateau schedule.
    "paper": dict(image_size=224, width=1.0, batch_norm=False, weights="imagenet", batch_size=32, epochs=100,
                  augment="snn4space",
                  optimizer="rmsprop", learning_rate=1e-3, lr_schedule="plateau", warmup_epochs=0, lr_patience=5,
                  lr_factor=0.1, stop_patience=10, qcfs_warmup=0.0),
    # From scratch in about 11 minutes of training on 2 CPU cores (UC Merced, 1,680 images); chosen by the
    # ablation in benchmarks/results/ann_recipe.md: cosine decay over the whole budget (no early stopping),
    # width 0.25 (4x fewer MACs than 0.5, so 2.5x the epochs in the same time), geometric augmentation only.
    # QCFS networks train as ReLU for 75 % of the epochs, then quantise at L = 2 (lambda of least error), with a
    # sparsity penalty of 1 and each pooled map requantised at 2L levels (pool_levels: 2 x levels, whatever
    # --levels says): on the accuracy/energy front (benchmarks/results/energy_pareto.md, seeds 0-2) the SNN at
    # T = 1 costs 0.41x its ANN on loihi, against 0.53x without the requantised pooling, for 0.9 points of ANN
    # accuracy (within the seeds' spread). ReLU networks train without the penalty unless asked.
    "quick": dict(image_size=64, width=0.25, batch_norm=True, weights="none", batch_size=32, epochs=100,
                  augment="geometric", optimizer="adam", learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=1,
                  min_learning_rate=1e-5, levels=2, qcfs_warmup=0.75, sparsity=1.0, pool_levels=4),
    # The longer budget (not yet measured): width 0.5 and 160 epochs, about 50 minutes on 2 CPU cores.
    "full": dict(image_size=64, width=0.5, batch_norm=True, weights="none", batch_size=32, epochs=160,
                 augment="geometric", optimizer="adam", learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=2,
                 min_learning_rate=1e-5, levels=2, qcfs_warmup=0.75, sparsity=1.0, pool_levels=4),
}



@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``); the defaults are the quick preset.

    ``architecture`` "vgg16", "resnet18" or "resnet20" is an ANN of ``train_ann.py``; "spikformer" and
    "sdt" are spiking transformers (``train_spiking_transformer.py``),
    shaped by ``depth``, ``dim``, ``heads``, ``timesteps``, ``mlp_ratio`` and
    ``pooling``.
    """

    run_dir: str
    dataset: str = "uc_merced"
    data_dir: str | None = None
    image_size: int = 64
    width: float = 0.25
    batch_norm: bool = True
    weights: str = "none"
    batch_size: int = 32
    epochs: int = 100
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    split: tuple = (0.8, 0.1, 0.1)
    # stratified K-fold cross-validation (data.stratified_folds): the test split is fold ``fold`` of ``folds``,
    # and split's train:val proportion divides the rest (0: off, the split above)
    folds: int = 0
    fold: int = 0
    augment: str = "geometric"  # a name in data.AUGMENTATIONS
    lr_patience: int = 3  # epochs without val_loss improvement before the LR drops
    lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    stop_patience: int = 8  # epochs without val_accuracy improvement before stopping
    preset: str | None = None
    kernel_l2: float = 1e-4
    bias_l1: float = 1e-5
    activation: str = "relu"  # or "qcfs"
    levels: int = 4  # QCFS quantisation levels
    qcfs_threshold: float = 2.0  # initial (trainable) QCFS threshold lambda
    architecture: str = "vgg16"
    depth: int = 2
    dim: int = 256
    heads: int = 8
    timesteps: int = 4
    mlp_ratio: int = 4
    pooling: str = "0011"
    weight_decay: float = 0.0  # decoupled weight decay (adamw)
    lr_schedule: str = "cosine"  # or "plateau" (per epoch, to min_learning_rate, after warmup_epochs)
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    # QCFS ANNs: train this fraction of the epochs as ReLU, then quantise, each lambda where QCFS reproduces the
    # layer's activations best (0: QCFS from the start)
    qcfs_warmup: float = 0.75
    # QCFS with a ReLU warm-up: distil the quantised network from the warm-up's ReLU network at this weight of the
    # loss (0: off), on logits softened by distill_temperature; see training.distillation_loss
    distill: float = 0.0
    distill_temperature: float = 4.0
    # weight of the SNN's expected synaptic operations per ANN MAC in the loss (0: off); see add_sparsity_penalty
    sparsity: float = 0.0
    # VGG-16: pool each block's last conv before its activation (models.vgg16), so that its SNN has 4x fewer
    # neurons and synaptic operations there
    pool_before_activation: bool = False
    # VGG-16 with QCFS: a QCFS activation of this many levels after each block's pooling (0: none; models.vgg16)
    pool_levels: int = 0
    # edge-filter input (edges.parse): "none", "prewitt", "sobel_sq_mask", ...; applied by every stage
    input_transform: str = "none"
    # transfer learning: start from this run's weights (a new head for new classes), the backbone frozen for the
    # first freeze_backbone epochs, then trained at backbone_lr_factor x the learning rate
    init_from: str | None = None
    freeze_backbone: int = 0
    backbone_lr_factor: float = 1.0
    transfer: dict = field(default_factory=dict)  # what was copied (transfer.Transfer), written by training
    # multi-band images (bands.py): --bands as given (None: every band), and the selected bands with the training
    # split's per-band statistics (bands.Plan), written by training; both empty for RGB runs and older runs
    bands: str | None = None
    band_stats: dict = field(default_factory=dict)
    # event datasets (events.py): --event-binning and --event-duration-us as given (None: time binning over each
    # recording's span), and what training did (events.Binning: sensor size, mode, frames, duration, scale),
    # written by training; empty for image runs and older runs
    event_binning: str | None = None
    event_duration_us: int | None = None
    event_sensor_size: list | None = None  # --sensor-size WIDTH HEIGHT, for files that do not store theirs
    events: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrainConfig":
        """The ANN preset ``name`` of :data:`PRESETS` with ``overrides`` (``run_dir`` among them), and the defaults
        that follow from both, which the CLI, the benchmarks and library callers all get from here:

        - ``sparsity`` 0 for a ReLU network (the presets' penalty was measured on QCFS networks only);
        - the presets' requantised pooled maps (``pool_levels``) at 2L levels for a QCFS VGG-16 that pools after
          its activations, and none for any other network.

        A key in ``overrides`` is taken as given, derived defaults included."""
        if name not in PRESETS:
            raise UserError(f"unknown preset {name!r}: choose one of {', '.join(sorted(PRESETS))}")
        config = cls(**{**PRESETS[name], "preset": name, **overrides})
        if "sparsity" not in overrides and config.activation != "qcfs":
            config.sparsity = 0.0
        if "pool_levels" not in overrides and config.pool_levels:
            plain = config.activation != "qcfs" or config.architecture != "vgg16" or config.pool_before_activation
            config.pool_levels = 0 if plain else 2 * config.levels
        return config

    def validate(self) -> None:
        checks = [
            (self.image_size >= 16, f"--image-size must be at least 16, got {self.image_size}"),
            (self.folds == 0 or (self.folds >= 2 and 0 <= self.fold < self.folds),
             f"--fold must be one of 0 .. {self.folds - 1} with --folds {self.folds} (--folds at least 2, or 0: off)"),
            (self.width > 0, f"--width must be positive, got {self.width}"),
            (0 <= self.seed <= data.MAX_SEED, f"--seed must be 0 to {data.MAX_SEED} (2**32 - 1, what NumPy's seeding "
                                              f"accepts), got {self.seed}"),
            (not self._split_problem(), self._split_problem()),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.learning_rate > 0, f"--learning-rate must be positive, got {self.learning_rate}"),
            (self.augment in data.AUGMENTATIONS,
             f"--augment must be one of {', '.join(data.AUGMENTATIONS)}, got {self.augment!r}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.architecture in ARCHITECTURES,
             f"unknown architecture {self.architecture!r}: use one of {', '.join(ARCHITECTURES)}"),
            (self.batch_norm or not self.architecture.startswith("resnet"),
             f"{self.architecture} always has BatchNorm (folded at conversion): drop --no-batch-norm"),
            (self.lr_schedule in LR_SCHEDULES,
             f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.sparsity >= 0 and math.isfinite(self.sparsity),
             f"--sparsity must be 0 (off) or positive, got {self.sparsity}"),
            (not self.sparsity or not self.spiking, "--sparsity applies to the ANNs of train_ann.py only"),
            (not self.pool_levels or (self.architecture == "vgg16" and self.activation == "qcfs"
                                      and not self.pool_before_activation),
             "--pool-levels requantises the pooled maps of a QCFS vgg16 that pools after its activations: it needs "
             "--architecture vgg16, --activation qcfs and no --pool-before-activation"),
            (self.pool_levels >= 0, f"--pool-levels must be 0 (off) or positive, got {self.pool_levels}"),
            (not self.pool_before_activation or self.architecture == "vgg16",
             f"--pool-before-activation applies to vgg16, whose blocks end in a pooling; {self.architecture} has "
             "none: drop it"),
            (0 <= self.qcfs_warmup < 1, f"--qcfs-warmup must be in [0, 1) so that the network ends quantised, "
                                        f"got {self.qcfs_warmup}"),
            (0 <= self.distill < 1 and math.isfinite(self.distill),
             f"--distill must be in [0, 1) (the weight of the teacher's term; 0: off), got {self.distill}"),
            (not self.distill or self.qcfs_from_epoch > 0,
             "--distill distils a QCFS network from its own ReLU warm-up: it needs --activation qcfs and a "
             "--qcfs-warmup that leaves at least one ReLU epoch"),
            (self.distill_temperature > 0 and math.isfinite(self.distill_temperature),
             f"--distill-temperature must be positive, got {self.distill_temperature}"),
            (not self.spiking or (self.dim % 8 == 0 and self.dim % self.heads == 0),
             f"--dim must be a multiple of 8 and of --heads ({self.heads}), got {self.dim}"),
            (not self.spiking or (len(self.pooling) == 4 and set(self.pooling) <= {"0", "1"}),
             f"--pooling must be four 0/1 flags such as 0011, got {self.pooling!r}"),
            (self.init_from is not None or (self.freeze_backbone == 0 and self.backbone_lr_factor == 1.0),
             "--freeze-backbone and --backbone-lr-factor apply to a backbone copied by --init-from RUN: add it"),
            (0 <= self.freeze_backbone <= self.epochs,
             f"--freeze-backbone must be 0 to --epochs ({self.epochs}) epochs, got {self.freeze_backbone}"),
            (self.backbone_lr_factor > 0 and math.isfinite(self.backbone_lr_factor),
             f"--backbone-lr-factor must be positive, got {self.backbone_lr_factor}"),
            (self.init_from is None or self.weights in ("none", None),
             f"--init-from and --weights {self.weights} both set the initial weights: give one"),
            (self.init_from is None or Path(self.init_from).resolve() != Path(self.run_dir).resolve(),
             "--init-from names this run's own directory: start from another run"),
            (self.event_binning in (None, *events.RUN_BINNINGS),
             f"--event-binning must be one of {', '.join(events.RUN_BINNINGS)}, got {self.event_binning!r}"),
            (self.event_sensor_size is None or (len(self.event_sensor_size) == 2
                                                 and all(int(v) >= 1 for v in self.event_sensor_size)),
             f"--sensor-size takes a width and a height of at least 1 pixel, got {self.event_sensor_size!r}"),
            (self.event_duration_us is None or self.event_duration_us >= 1,
             f"--event-duration-us must be at least 1 microsecond, got {self.event_duration_us}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        edges.parse(self.input_transform)
        bands.parse_selection(self.bands)
        if self.spiking:
            resources.check_timesteps(self.timesteps)

    def _split_problem(self) -> str | None:
        """What is wrong with ``split``: every split is used (val picks the best epoch, test scores the ANN and
        its SNN), so each needs a positive fraction; with --folds the folds give the test split."""
        split = tuple(self.split)
        given = " ".join(f"{f:g}" for f in split) if all(isinstance(f, (int, float)) for f in split) else split
        if len(split) != 3 or not all(isinstance(f, (int, float)) and math.isfinite(f) and f >= 0 for f in split):
            return f"--split must be three fractions TRAIN VAL TEST, got {given}"
        if self.folds:
            return None if min(split[:2]) > 0 else f"--split needs positive TRAIN and VAL fractions, got {given}"
        if min(split) <= 0 or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
            return (f"--split must be three positive fractions TRAIN VAL TEST summing to 1 (val picks the best "
                    f"epoch, test scores the ANN and its SNN), got {given}: e.g. --split 0.8 0.1 0.1")
        return None

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"split": list(self.split)}

    @classmethod
    def from_json(cls, obj: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise UserError(f"config.json has unknown keys {sorted(unknown)}: was it written by another version?")
        # runs written before these keys existed trained without them
        obj = {"label_smoothing": 0.0, "qcfs_warmup": 0.0, "sparsity": 0.0, "input_transform": "none"} | obj
        return cls(**{k: tuple(v) if k == "split" else v for k, v in obj.items()})

    @property
    def transform(self) -> edges.EdgeFilter | None:
        """The input transform every stage applies to every batch (None: plain images)."""
        return edges.parse(self.input_transform)

    @property
    def channels(self) -> int:
        """Input channels of the run's models: 3 (RGB), the bands selected from a multi-band source, or 2 (an
        event run's OFF and ON counts)."""
        return 2 if self.events else bands.channels_of(self)

    @property
    def qcfs_from_epoch(self) -> int:
        """The first QCFS epoch (0-based) after the ReLU warm-up; 0 without one."""
        if self.activation != "qcfs" or self.spiking:
            return 0
        return int(math.floor(self.qcfs_warmup * self.epochs))

    @property
    def spiking(self) -> bool:
        """True for a directly trained spiking transformer."""
        return self.architecture not in ANN_ARCHITECTURES

    def check_transformer_memory(self, batch_size: int, training: bool) -> None:
        """Refuse a spiking transformer's batch (all T steps unrolled at once) that would not fit in memory."""
        needed = resources.transformer_bytes(self.image_size, self.dim, self.depth, self.heads, self.mlp_ratio,
                                             self.pooling, batch_size, self.timesteps, training)
        resources.check_memory(needed, f"{'training' if training else 'running'} the {self.architecture} at "
                                       f"T = {self.timesteps} on batches of {batch_size}",
                               "lower --timesteps or --batch-size")

    def check_ann_memory(self, batch_size: int) -> None:
        """Refuse an ANN batch whose activations would not fit in memory (a mistyped --image-size 6400 would
        otherwise be killed by the out-of-memory killer without a word)."""
        needed = resources.conv_net_training_bytes(self.conv_maps(), batch_size)
        resources.check_memory(needed, f"training the {self.architecture} on {self.image_size}x{self.image_size} "
                                       f"images in batches of {batch_size}",
                               f"lower --image-size (now {self.image_size}) or --batch-size (now {batch_size})")

    def conv_maps(self) -> list:
        """``(side, channels)`` of each conv layer's output of the ANN (VGG-16 or a ResNet)."""
        side, maps = self.image_size, []
        if self.architecture == "vgg16":
            for channels, pooled in zip(*models.vgg16_layout(self.width)):
                maps.append((side, channels))
                side = side // 2 if pooled else side
            return maps
        stages = models.RESNET_STAGES[self.architecture]
        maps.append((side, models.scaled_channels(stages[0][0], self.width)))  # the stem
        for channels, blocks, stride in stages:
            side = -(-side // stride)  # "same" padding: ceil
            maps += [(side, models.scaled_channels(channels, self.width))] * (2 * blocks + 1)  # and a projection
        return maps

    def learning_rate_at(self, epoch: int) -> float | None:
        """The cosine schedule's rate for ``epoch`` (0-based); None under the plateau schedule."""
        if self.lr_schedule != "cosine":
            return None
        if epoch < self.warmup_epochs:
            return self.learning_rate * (epoch + 1) / (self.warmup_epochs + 1)
        progress = (epoch - self.warmup_epochs) / max(1, self.epochs - self.warmup_epochs)
        low = min(self.min_learning_rate, self.learning_rate)
        return low + (self.learning_rate - low) * 0.5 * (1 + math.cos(math.pi * progress))


def build_model(config: TrainConfig, num_classes: int, weights: str | None = None):
    """The model a config describes (``weights`` overrides ``config.weights`` of an ANN)."""
    if config.spiking:
        build = models.spikformer if config.architecture == "spikformer" else models.spike_driven_transformer
        return build(num_classes, config.depth, config.dim, config.heads, config.timesteps, config.image_size,
                     config.mlp_ratio, config.pooling, channels=config.channels)
    weights = config.weights if weights is None else weights
    if config.architecture != "vgg16":
        return models.resnet(config.architecture, num_classes, config.image_size, config.width, weights,
                             config.kernel_l2, config.bias_l1, seed=config.seed, activation=config.activation,
                             levels=config.levels, qcfs_threshold=config.qcfs_threshold, channels=config.channels)
    return models.vgg16(num_classes, config.image_size, config.width, config.batch_norm, weights, config.kernel_l2,
                        config.bias_l1, seed=config.seed, activation=config.activation, levels=config.levels,
                        qcfs_threshold=config.qcfs_threshold, pool_before_activation=config.pool_before_activation,
                        pool_levels=config.pool_levels, channels=config.channels)


@dataclass
class RunData:
    """The data of a run directory: source, class names, split manifest."""

    config: TrainConfig
    source: "data.ImageSource | events.EventSource"
    classes: list
    manifest: dict

    def __post_init__(self):
        # an event source: the run's binning; a multi-band source: the run's --bands and their training statistics
        if events.prepare(self.config, self.source, self.indices) is None:
            bands.prepare(self.config, self.source, self.indices)

    def indices(self, split: str) -> np.ndarray:
        return data.manifest_indices(self.source, self.manifest, split)

    def sample(self, split: str, count: int | None, seed: int) -> np.ndarray:
        """A seeded random subset of ``count`` images of ``split`` (all if None).

        Splits are stored class by class, so a prefix would hold few classes.
        """
        indices = self.indices(split)
        if count is None or count >= len(indices):
            return indices
        return np.sort(np.random.default_rng(seed).choice(indices, count, replace=False))

    def batches(self, split: str, batch_size: int, count: int | None = None, seed: int = 0):
        """Evaluation batches of ``split`` (of ``count`` of its images drawn by :meth:`sample`), input
        transform applied."""
        decoded = data.decoded_dataset(self.source, self.sample(split, count, seed), self.config.image_size)
        return data.evaluation_batches(decoded, batch_size, self.config.transform)

    @property
    def per_step(self) -> bool:
        """Whether a converted SNN takes this run's inputs one frame per step: an event run, unless binned as
        ``accumulated`` (its SNN then takes the accumulated frame at every step, as an image run's its image)."""
        return self.source.kind == "events" and self.source.binning.mode != events.ACCUMULATED

    def step_batches(self, split: str, batch_size: int, timesteps: int):
        """An event run's evaluation batches of ``split`` as per-step frames ``(batch, timesteps, s, s, 2)``, for
        a converted SNN to take frame t at step t (:meth:`SpikingNetwork.simulate`); None where not
        :attr:`per_step`."""
        if not self.per_step:
            return None
        decoded = self.source.decoded(self.indices(split), self.config.image_size, steps=timesteps)
        return data.evaluation_batches(decoded, batch_size)

    def decoded(self, split: str, image_size: int | None = None):
        return data.decoded_dataset(self.source, self.indices(split), image_size or self.config.image_size)

    def labels(self, split: str) -> np.ndarray:
        return np.asarray([label for _, label in self.manifest[split]], np.int64)


def open_run(run_dir: str | Path, data_dir: str | None = None) -> RunData:
    """Load a trained run's config, classes and split, and reopen its data.

    ``data_dir`` replaces the saved data location (for a run moved to another
    machine); the split must still find every file it lists.
    """
    run_dir = Path(run_dir)
    require(run_dir, CONFIG, CLASSES, SPLIT)
    check_inputs(run_dir, [CONFIG, CLASSES, SPLIT])
    config = TrainConfig.from_json(read_json(run_dir / CONFIG))
    classes = read_json(run_dir / CLASSES)
    manifest = read_json(run_dir / SPLIT)
    if data_dir is not None:
        config.data_dir = data_dir
        if config.dataset not in data.TFDS_NAMES:
            config.dataset = data_dir
    source = events.open_source(config.dataset, config.data_dir, config.event_sensor_size)
    if source.classes != classes:
        raise UserError(f"the data at {source.name} has classes {source.classes[:3]}... but the run was trained on "
                        f"{classes[:3]}...: point --data-dir at the data the run was trained on")
    return RunData(config, source, classes, manifest)


def weights_file(config: TrainConfig) -> str:
    """The run-directory file that holds the trained model's weights."""
    return TRANSFORMER_WEIGHTS if config.spiking else ANN_WEIGHTS


def load_trained_model(run_dir: str | Path, config: TrainConfig, num_classes: int):
    """Rebuild the model ``config`` describes and load the run's trained weights into it."""
    run_dir = Path(run_dir)
    name = weights_file(config)
    require(run_dir, name)
    check_inputs(run_dir, [name])
    model = build_model(config, num_classes, weights="none")
    load_weights(model, run_dir / name, what="transformer weights" if config.spiking else "ANN weights")
    return model


def load_ann(run_dir: Path, config, num_classes: int):
    """Rebuild a run's ANN from its TrainConfig and load its trained weights."""
    if config.spiking:
        raise UserError(f"{run_dir} holds a directly trained {config.architecture}, which is already a spiking "
                        "network: there is no ANN to convert or fine-tune; cost it with energy_estimation.py")
    return load_trained_model(run_dir, config, num_classes)


def load_snn(run_dir: Path, timesteps: int | None = None, config_name: str = SNN_CONFIG,
             weights_name: str = SNN_WEIGHTS, **overrides):
    """Rebuild a run's SpikingNetwork from its JSON config and weights file.

    ``timesteps`` and ``overrides`` replace entries of the saved config.
    """
    run_dir = Path(run_dir)
    require(run_dir, config_name, weights_name)
    check_inputs(run_dir, [config_name, weights_name])
    config = read_json(run_dir / config_name) | overrides
    if timesteps is not None:
        config["timesteps"] = timesteps
    try:
        snn = SpikingNetwork.from_config(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{run_dir / config_name} does not describe a spiking network ({exc}): re-run the stage "
                        f"that wrote it") from None
    load_variables(snn.weights, run_dir / weights_name, what="SNN weights")
    return snn


def load_fine_tuned(run_dir: Path, timesteps: int | None = None):
    """The fine-tuned SNN of a run."""
    return load_snn(run_dir, timesteps, FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS)


def load_trained(run_dir, config, num_classes: int, timesteps: int | None = None) -> SpikingTransformer:
    """A run's trained spiking transformer (optionally run for another number of ``timesteps``)."""
    if timesteps is not None:
        config = dataclasses.replace(config, timesteps=int(timesteps))
    return load_trained_model(run_dir, config, num_classes)

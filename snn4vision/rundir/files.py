"""The run directory's files: their names, which stage makes each and what re-running a stage makes stale
(:data:`DOWNSTREAM`), provenance (each output's hash and its inputs'), what the project owns in a run, and
making the directory."""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from ..checkpoints import atomic_write_json, read_json
from ..errors import UserError

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

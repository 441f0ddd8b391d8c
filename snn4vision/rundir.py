"""The run directory: the contract between pipeline stages.

Each stage reads what earlier stages wrote and adds its own files; a stage
that finds something missing names the file and the stage that makes it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

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


def prepare_new(run_dir: Path, outputs: list[str], resume: bool, overwrite: bool, resumable: bool = True) -> None:
    """Make sure a stage may write ``outputs`` into ``run_dir``.

    A stage never silently replaces earlier results: if any output exists and
    neither ``resume`` nor ``overwrite`` is set, it stops with a UserError.
    With ``overwrite`` the old outputs (and checkpoints) are removed first.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    present = [name for name in outputs if (run_dir / name).exists()]
    if not present or resume:
        return
    if not overwrite:
        resume_hint = "--resume to continue that run, " if resumable else ""
        raise UserError(
            f"{run_dir} already holds {', '.join(present)}: pass {resume_hint}"
            "--overwrite to replace it, or choose another --run directory"
        )
    for name in present:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()

"""Atomic writes and resumable training state.

Every file a stage produces is written to a temporary name in the same folder
and moved into place with :func:`os.replace`, so a killed process leaves
either the old file or the new one, never half of one.

:class:`EpochCheckpointer` keeps the state of a stage in progress (model and
optimizer variables, plus a small JSON document of loop state). A state is
committed by one atomic rename of ``state.json``; the variables it names are
written before it, so a kill at any moment leaves the last committed state
complete and readable.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from .errors import UserError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Make ``path`` by ``write(temporary path)`` and a rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same full name at the end, so format-by-extension (".weights.h5") is kept.
    tmp = path.parent / f".tmp-{uuid.uuid4().hex[:12]}-{path.name}"
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def strict_json(obj: Any) -> tuple[Any, list]:
    """``obj`` with every NaN or infinity replaced by None, and the paths (``a.b[3]``) of those replaced."""
    replaced = []

    def clean(value, where):
        if isinstance(value, float) and not math.isfinite(value):
            replaced.append(where or "$")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return clean(obj, ""), replaced


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON to ``path`` atomically.

    JSON has no NaN or infinity: such values are written as null, and a dict
    gets a ``"non_finite"`` list naming where they were.
    """
    obj, replaced = strict_json(obj)
    if replaced and isinstance(obj, dict):
        obj["non_finite"] = replaced
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_save_weights(model, path: Path) -> None:
    """Save a Keras model's weights to an ``.h5`` file atomically."""
    atomic_write(path, lambda tmp: model.save_weights(str(tmp)))


def atomic_save_figure(figure, path: Path) -> None:
    """Save a Matplotlib figure (format from the suffix) atomically and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100))
    plt.close(figure)


def _variable_name(variable) -> str:
    return variable.name.split(":")[0]


def save_variables(variables, path: Path) -> None:
    """Save tf.Variables to an HDF5 file keyed by variable name, atomically.

    Unlike Keras' ``save_weights``, loading does not depend on the order of
    the variables (which changes when a weight becomes (non-)trainable).
    """
    import h5py

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            for variable in variables:
                handle.create_dataset(_variable_name(variable), data=variable.numpy())

    atomic_write(path, write)


def _read_h5(path: Path, what: str, read: Callable) -> Any:
    """``read(h5py file)``, turning a missing, truncated or damaged file into a UserError that says so."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    try:
        with h5py.File(path, "r") as handle:
            return read(handle)
    except (OSError, KeyError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what} file {path} is damaged or incomplete ({detail}): re-run the stage that wrote it "
                        "with --overwrite") from None


def load_variables(variables, path: Path, what: str = "weights") -> None:
    """Load variables saved by :func:`save_variables`, matching them by name and shape."""
    stored = _read_h5(path, what, lambda handle: {name: handle[name][()] for name in handle})
    for variable in variables:
        name = _variable_name(variable)
        value = stored.get(name)
        if value is None or tuple(value.shape) != tuple(variable.shape):
            found = "missing" if value is None else f"shape {tuple(value.shape)}"
            raise UserError(f"{what} in {path} do not fit the model built from this run's config (a checkpoint "
                            f"from another model?): {name} of shape {tuple(variable.shape)} is {found}")
        variable.assign(value)


_TRAIN = "pipelines/train_ann.py (or train_spiking_transformer.py)"

#: Run files by name: the JSON type, keys every reader needs (``a.b``: key ``b`` of ``a``) and the stage that
#: writes the file. Checked on every read, so an emptied file or one from another version is one line, not a
#: KeyError wherever it is read.
RUN_FILES = {
    "config.json": (dict, ("seed",), _TRAIN),
    "classes.json": (list, (), _TRAIN),
    "split.json": (dict, ("test",), _TRAIN),
    "metrics.json": (dict, ("test.accuracy",), _TRAIN),
    "conversion.json": (dict, ("ann_test_accuracy", "variants"), "pipelines/convert_snn.py"),
    "fine_tune.json": (dict, ("results",), "pipelines/fine_tune.py"),
    "energy.json": (dict, ("model", "timesteps", "snn_test_accuracy", "spikes_per_image", "devices", "summary"),
                    "pipelines/energy_estimation.py"),
    "summary.json": (dict, ("energy",), "pipelines/run_all.py"),
}


def _fix(path: Path) -> str:
    """How to replace the run file ``path``."""
    script = RUN_FILES.get(path.name, (None, None, None))[2]
    if script is None:
        return "delete it and re-run the stage that writes it"
    return f"re-run {script} --run {path.parent} --overwrite"


def _missing(document: Any, keys: tuple) -> str | None:
    """The first of ``keys`` (``a.b`` for nested ones) that ``document`` lacks."""
    for key in keys:
        value = document
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return key
            value = value[part]
    return None


def check_run_file(path: Path, document: Any) -> Any:
    """``document``, read from ``path``, if it has what the stages read from a file of that name."""
    if path.name not in RUN_FILES:
        return document
    kind, keys, _ = RUN_FILES[path.name]
    if not isinstance(document, kind) or not document:
        problem = f"not a JSON {kind.__name__}" if not isinstance(document, kind) else f"empty ({json.dumps(document)})"
        raise UserError(f"{path} is {problem}: {_fix(path)}")
    key = _missing(document, keys)
    if key is not None:
        raise UserError(f"{path} has no \"{key}\" (emptied, or written by another version?): {_fix(path)}")
    return document


def read_json(path: Path) -> Any:
    """Read a JSON file, turning a missing, damaged or incomplete one (:data:`RUN_FILES`) into a UserError."""
    path = Path(path)
    try:
        return check_run_file(path, json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise UserError(f"missing file {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (damaged, or not written by snn4vision): {_fix(path)}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): {_fix(path)}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or type(exc).__name__}): {_fix(path)}") from None


def load_weights(model, path: Path, what: str = "weights") -> None:
    """Load ``.h5`` weights, naming the file when they do not fit the model."""
    path = Path(path)
    _read_h5(path, what, lambda handle: [handle[name] for name in handle])  # readable at all?
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{what} in {path} do not fit the model built from this run's config "
            f"(a checkpoint from another model?): {first_line}"
        ) from None


class EpochCheckpointer:
    """Resumable state of a training loop, committed once per epoch.

    Layout of ``directory``::

        state.json          the committed state (atomic rename)
        step-000003/        variables of committed step 3 (tf.train.Checkpoint)
        step-000003.best.weights.h5   optional: best weights so far

    Only the committed step's files and the best weights it names are kept.
    """

    STATE = "state.json"

    def __init__(self, directory: Path, **trackables):
        import tensorflow as tf

        self.directory = Path(directory)
        self._checkpoint = tf.train.Checkpoint(**trackables)

    @property
    def state_path(self) -> Path:
        return self.directory / self.STATE

    def exists(self) -> bool:
        return self.state_path.is_file()

    def save(self, step: int, state: dict, best_weights_of=None) -> None:
        """Write variables (and optionally best weights), then commit ``state``.

        ``best_weights_of``: a model whose weights become the new "best"
        weights of this state; if None, the previous best file is kept.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:06d}"
        prefix = self.directory / name / "ckpt"
        if (self.directory / name).exists():
            shutil.rmtree(self.directory / name)
        previous = self.committed() if self.exists() else {}
        state = dict(state, step=step, checkpoint=f"{name}/ckpt")
        try:
            self._checkpoint.write(str(prefix))
            if best_weights_of is not None:
                state["best_weights"] = f"{name}.best.weights.h5"
                atomic_save_weights(best_weights_of, self.directory / state["best_weights"])
            else:
                state["best_weights"] = previous.get("best_weights")
            atomic_write_json(self.state_path, state)
        except BaseException:  # (a full disk): drop this step's files; the committed state stays as it was
            self._clean(keep={previous.get("checkpoint", "").split("/")[0], previous.get("best_weights")})
            raise
        self._clean(keep={name, state["best_weights"]})

    def committed(self) -> dict:
        """The committed state document, without touching any variables."""
        state = read_json(self.state_path)
        if not isinstance(state, dict) or _missing(state, ("step", "checkpoint")):
            raise UserError(f"{self.state_path} is incomplete (emptied?): start the stage again with --overwrite")
        return state

    def _clean(self, keep: set) -> None:
        for entry in self.directory.iterdir():
            if entry.name == self.STATE or entry.name in keep or entry.name.startswith("."):
                continue
            if entry.name.startswith("step-"):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def restore(self) -> dict | None:
        """Restore the variables of the committed state and return the state.

        Returns None when nothing was committed yet.
        """
        if not self.exists():
            return None
        state = self.committed()
        prefix = self.directory / state["checkpoint"]
        try:
            status = self._checkpoint.read(str(prefix))
            status.assert_existing_objects_matched()
        except (ValueError, AssertionError) as exc:
            raise UserError(
                f"the checkpoint in {self.directory} does not fit this model "
                f"(was it written by another configuration?): {str(exc).splitlines()[0]}; "
                "resume with the settings it was started with, or start the stage again with --overwrite"
            ) from None
        except Exception as exc:  # NotFoundError, DataLossError from TensorFlow
            raise UserError(f"the checkpoint in {self.directory} cannot be read ({type(exc).__name__}); start the stage again with --overwrite") from None
        return state

    def best_weights_path(self, state: dict) -> Path | None:
        best = state.get("best_weights")
        return self.directory / best if best else None

"""The run directory's transaction and lock: ``--overwrite`` sets earlier outputs aside and puts them back if
the stage fails (:func:`prepare_new`, :func:`replacing`, :func:`recover`), and one process writes at a time
(:func:`locked`)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from .. import data
from ..checkpoints import atomic_write_json, read_json
from ..errors import UserError
from .files import DOWNSTREAM, LOCK, STALE, exists, foreign_files, make

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


_held: dict = {}  # resolved run directory -> [open lock file, depth]


def holds_lock(run_dir: Path) -> bool:
    """Whether this process holds ``run_dir``'s lock (:func:`locked`), e.g. run_all around its stages."""
    return str(Path(run_dir).resolve()) in _held


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


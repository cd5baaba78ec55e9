"""A data stage's outputs appear all at once or not at all, and one process at a time writes them.

`stage_output(folder)` holds a lock for the folder (filelock: a second writer is refused with a clear
message), hands out a fresh temporary folder beside it, and when the block ends without error puts that
folder in the stage folder's place. Readers therefore see either the old complete outputs or the new
complete ones: never a mix, never half a file. A crash between the two renames of the swap is repaired
by the next writer, which also removes temporaries that dead writers left behind.
"""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from ..errors import StageBusy, UserError


def _siblings(folder: Path, kind: str) -> list[Path]:
    return sorted(folder.parent.glob(f".{folder.name}.{kind}-*"))


def _lock(folder: Path) -> FileLock:
    return FileLock(str(folder.parent / f".{folder.name}.lock"))


def _repair(folder: Path) -> None:
    """Undo a swap that died between its two renames, then drop every leftover temporary."""
    olds = _siblings(folder, "old")
    if not folder.exists() and olds:
        os.replace(olds[-1], folder)
    for leftover in [*_siblings(folder, "old"), *_siblings(folder, "tmp"), *_siblings(folder, "gone")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(new: Path, folder: Path) -> None:
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def stage_lock(folder: Path, command: str) -> Iterator[None]:
    """Refuse to run when another process holds `folder`'s lock, or when `folder`'s parent cannot be written."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder.parent}: cannot create the data folder ({e.strerror}); check data.root") from None
    if not os.access(folder.parent, os.W_OK | os.X_OK):
        raise UserError(f"{folder.parent}: the data folder is not writable; check data.root and its permissions")
    lock = _lock(folder)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise StageBusy(f"{folder}: another `{command}` is writing it (lock {lock.lock_file}); wait for it to "
                        f"finish, then run again") from None
    except OSError as e:  # a read-only file system, or a folder of another user
        raise UserError(f"{folder.parent}: the data folder is not writable ({e.strerror}); check data.root and "
                        f"its permissions") from None
    try:
        _repair(folder)
        yield
    finally:
        lock.release()


def _remove(folder: Path) -> None:
    if folder.exists():
        gone = folder.parent / f".{folder.name}.gone-{uuid.uuid4().hex[:8]}"  # never restored by _repair
        os.replace(folder, gone)  # one rename: readers never see a half-deleted folder
        shutil.rmtree(gone, ignore_errors=True)


@contextmanager
def stage_output(folder: Path, command: str, discard_on: tuple[type[BaseException], ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes `folder` in one swap, on error it is removed.
    An error of a type in `discard_on` (a failed gate) removes the old outputs too, so that no later stage
    can go on with them."""
    with stage_lock(folder, command):
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, discard_on):
                _remove(folder)
            raise
        _swap_in(tmp, folder)

"""A data stage's outputs appear all at once or not at all, and one process at a time writes them.

`stage_output(folder)` holds a lock for the folder (filelock: a second writer is refused with a clear
message), hands out a fresh temporary folder beside it, and when the block ends without error puts that
folder in the stage folder's place. Readers therefore see either the old complete outputs or the new
complete ones: never a mix, never half a file. A crash between the two renames of the swap is repaired
by the next writer, which also removes temporaries that dead writers left behind.

`run_folder_lock(folder)` is the same lock without the swap, for commands that write a folder in place (training,
index building). A refused writer is told who holds the lock: pid, host, command and since when.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
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


def _holder_file(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock.holder"


def _describe_holder(folder: Path) -> str:
    try:
        h = json.loads(_holder_file(folder).read_text())
        return f"held by pid {h['pid']} on {h['host']} since {h['since']}: {h['argv']}"
    except (OSError, ValueError, KeyError):  # the holder is between taking the lock and saying who it is
        return "holder unknown"


def _write_holder(folder: Path, command: str) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "argv": " ".join(sys.argv) or command, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = _holder_file(folder).with_name(f"{_holder_file(folder).name}.{os.getpid()}")
    tmp.write_text(json.dumps(holder))
    os.replace(tmp, _holder_file(folder))


def temporary_beside(folder: Path) -> Path:
    """A fresh, unique name for a temporary folder next to `folder` (removed by `repair_swap`)."""
    return folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def repair_swap(folder: Path) -> None:
    """Undo a swap that died between its two renames, then drop every leftover temporary. Only a holder of the
    folder's writer lock may call it (it removes temporaries)."""
    olds = _siblings(folder, "old")
    if not folder.exists() and olds:
        os.replace(olds[-1], folder)
    for leftover in [*_siblings(folder, "old"), *_siblings(folder, "tmp"), *_siblings(folder, "gone")]:
        shutil.rmtree(leftover, ignore_errors=True)


def swap_in(new: Path, folder: Path) -> None:
    """Put the complete folder `new` in `folder`'s place (two renames; `repair_swap` finishes one cut short)."""
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _exclusive(folder: Path, command: str) -> Iterator[None]:
    """Hold `folder`'s lock (and say who holds it), or refuse at once when another process holds it or when
    `folder`'s parent cannot be written."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder.parent}: cannot create the folder ({e.strerror}); check the configured path") from None
    if not os.access(folder.parent, os.W_OK | os.X_OK):
        raise UserError(f"{folder.parent}: the folder is not writable; check the configured path and its permissions")
    lock = _lock(folder)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise StageBusy(f"{folder}: another `{command}` is writing it ({_describe_holder(folder)}; lock "
                        f"{lock.lock_file}); wait for it to finish, then run again") from None
    except OSError as e:  # a read-only file system, or a folder of another user
        raise UserError(f"{folder.parent}: the folder is not writable ({e.strerror}); check the configured path "
                        f"and its permissions") from None
    try:
        _write_holder(folder, command)
        yield
    finally:
        _holder_file(folder).unlink(missing_ok=True)
        lock.release()


@contextmanager
def stage_lock(folder: Path, command: str) -> Iterator[None]:
    """Refuse to run when another process holds `folder`'s lock; repair what a dead writer left."""
    with _exclusive(folder, command):
        repair_swap(folder)
        yield


def _is_main_process() -> bool:
    """False in the non-main processes of `accelerate launch` / torchrun, which share the main one's folder."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def run_folder_lock(folder: Path, command: str) -> Iterator[None]:
    """One writer per run folder (training, index building): a second process is refused with the holder's
    pid, host and command. Only the main process of a distributed launch takes it."""
    if not _is_main_process():
        yield
        return
    with _exclusive(folder, command):
        yield


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
        tmp = temporary_beside(folder)
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, discard_on):
                _remove(folder)
            raise
        swap_in(tmp, folder)

"""The new items accepted between trainings, under `<data root>/new_items/`.

  accepted.jsonl      the write-ahead log and the source of truth: one line per accepted batch (its position,
                      idempotency key, digest, items and the answer given), fsync'd before the answer is sent
  accepted.parquet    every accepted item, derived from the log (for readers that want a table)
  quarantine.parquet  the rejected rows (file, line, reason)
  state.json          the log position the last training consumed, the files read; items since training are
                      the log's items after that position

`writer(params)` makes one writer at a time, across threads and processes (`POST /items`, `ingest-new-items`,
a reload's catch-up, `llmrec index`'s save): everything here that writes, and every index save, runs under it.
A crash mid-append leaves at most a torn last line, which readers ignore and the next writer cuts off.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
from filelock import FileLock

from ..config import Params
from ..data.contract import QUARANTINE

FIELDS = ["item_id", "domain", "title"]
LOG = "accepted.jsonl"
_thread_locks: dict[Path, threading.RLock] = {}
_file_locks: dict[Path, FileLock] = {}
_registry_lock = threading.Lock()


def new_items_dir(params: Params) -> Path:
    """`<data root>/new_items`: the accepted and quarantined new items and their state."""
    return params.data_root / "new_items"


@contextmanager
def writer(params: Params) -> Iterator[None]:
    """Hold the new-item store's writer lock (re-entrant in a thread; blocks other threads and processes)."""
    path = (params.data_root / ".new_items.lock").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _registry_lock:
        thread_lock = _thread_locks.setdefault(path, threading.RLock())
        file_lock = _file_locks.setdefault(path, FileLock(str(path), thread_local=False))
    with thread_lock, file_lock:  # the thread lock first: one thread of this process at a time holds the file
        yield


@dataclass(frozen=True)
class Batch:
    """One accepted batch of the log: its 1-based position, key, content digest, items and answer."""

    position: int
    key: str | None
    digest: str
    items: list[dict]  # item_id, domain, title, source_file, source_line, added
    answer: dict


def batch_digest(rows: pd.DataFrame) -> str:
    """What a batch asked for (its items' ids, domains and titles in order), to tell a retry from a new batch."""
    content = rows[FIELDS].astype("string").fillna("").to_numpy().tolist()
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def read_log(params: Params) -> list[Batch]:
    """Every accepted batch, oldest first (a torn last line, from a crash mid-append, is not one)."""
    path = new_items_dir(params) / LOG
    if not path.is_file():
        return _legacy_batches(params)
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]  # what follows the last newline is a torn append
    batches = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise ValueError(f"{path}:{number}: not a log record; the log is damaged") from None
        batches.append(Batch(record["position"], record.get("key"), record["digest"], record["items"],
                             record["answer"]))
    return batches


def _legacy_batches(params: Params) -> list[Batch]:
    """A store written before the log (accepted.parquet alone) reads as one batch at position 1."""
    legacy = new_items_dir(params) / "accepted.parquet"
    if not legacy.is_file():
        return []
    items = pd.read_parquet(legacy).astype(object).where(lambda f: f.notna(), None).to_dict("records")
    return [Batch(1, None, "legacy accepted.parquet", items, {})] if items else []


def append_batch(params: Params, rows: pd.DataFrame, key: str | None, digest: str, answer: dict) -> Batch:
    """Append an accepted batch to the log and fsync it; call under `writer`. Returns the batch."""
    out = new_items_dir(params)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOG
    _cut_torn_tail(path)
    log = read_log(params)
    if log and not path.exists():  # carry the items of a store made before the log into it
        _append_line(path, log[0])
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    columns = [c for c in (*FIELDS, "source_file", "source_line") if c in rows.columns]
    items = [{**{c: _plain(v) for c, v in zip(columns, row)}, "added": stamp}
             for row in rows[columns].itertuples(index=False)]
    batch = Batch(log[-1].position + 1 if log else 1, key, digest, items, answer)
    _append_line(path, batch)
    return batch


def _append_line(path: Path, batch: Batch) -> None:
    created = not path.exists()
    with open(path, "ab") as f:
        f.write(json.dumps(vars(batch), default=str).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    if created:
        _fsync_dir(path.parent)


def _plain(value):
    """A JSON-ready scalar (numpy and pandas scalars become Python ones)."""
    return value.item() if hasattr(value, "item") else (None if pd.isna(value) else value)


def _cut_torn_tail(path: Path) -> None:
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            os.fsync(f.fileno())


def log_items(batches: list[Batch]) -> pd.DataFrame:
    """The items of `batches`, one row each, with the log position of their batch."""
    rows = [{**item, "position": b.position} for b in batches for item in b.items]
    return pd.DataFrame(rows, columns=[*FIELDS, "source_file", "source_line", "added", "position"])


def accepted_items(params: Params) -> pd.DataFrame:
    """Every item accepted since the data was prepared (item_id, domain, title, source_file, source_line, added,
    position), from the log."""
    return log_items(read_log(params))


def since_training(params: Params, batches: list[Batch] | None = None) -> int:
    """Accepted items the last training has not consumed."""
    batches = read_log(params) if batches is None else batches
    trained = _state(new_items_dir(params))["trained_position"]
    return sum(len(b.items) for b in batches if b.position > trained)


def record_outcome(params: Params, quarantined: pd.DataFrame, source: str | Path, accepted: int) -> None:
    """After a batch (its accepted items already in the log): rewrite the derived accepted.parquet, append the
    quarantined rows and note the file in state.json, each atomically. Call under `writer`."""
    out = new_items_dir(params)
    out.mkdir(parents=True, exist_ok=True)
    batches = read_log(params)
    if accepted:
        _write_atomic(out / "accepted.parquet", lambda p: log_items(batches).to_parquet(p, index=False))
    if len(quarantined):
        q = quarantined.assign(stage="new_items", table="items")[QUARANTINE.names]
        old = out / "quarantine.parquet"
        if old.is_file():
            q = pd.concat([pd.read_parquet(old), q], ignore_index=True)
        _write_atomic(old, lambda p: q.to_parquet(p, index=False))
    state = _state(out)
    state["files"].append({"file": str(source), "at": time.strftime("%Y-%m-%d %H:%M:%S"), "accepted": accepted,
                           "quarantined": len(quarantined)})
    _write_state(out, state, batches)


def reset_since_training(params: Params) -> None:
    """Called after a retraining has consumed the new items: they no longer count towards the next one."""
    with writer(params):
        out = new_items_dir(params)
        batches = read_log(params)
        state = _state(out)
        state["trained_position"] = batches[-1].position if batches else 0
        if out.is_dir():
            _write_state(out, state, batches)


def _state(directory: Path) -> dict:
    path = directory / "state.json"
    if not path.is_file():
        return {"trained_position": 0, "files": []}
    state = json.loads(path.read_text())
    # a state written before the log counted items, not positions: the legacy batch is 1
    trained = state.get("trained_position", 0 if state.get("since_training", 0) else 1)
    return {"trained_position": trained, "files": state.get("files", [])}


def _write_state(directory: Path, state: dict, batches: list[Batch]) -> None:
    trained = state["trained_position"]
    state = {**state, "since_training": sum(len(b.items) for b in batches if b.position > trained)}
    _write_atomic(directory / "state.json", lambda p: p.write_text(json.dumps(state, indent=2)))


def _write_atomic(path: Path, write) -> None:
    """`write(temporary path)`, fsync it, then rename it over `path`: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

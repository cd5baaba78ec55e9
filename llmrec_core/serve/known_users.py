"""Known users for serving: their events read once, and their user vectors kept while the model serves.

`KnownUsers` reads the prepared users and events once (on the first known-user query) into one array of item
rows grouped by user, oldest first, so a query finds a user's history without reading parquet. `UserVectors`
keeps the user vectors a recommender computed, least recently used first out: a known user's history only
changes with new prepared data, which comes with retraining and a reload, and a reload builds a new recommender
with empty caches. An entry is keyed by the user and the history rows it was computed from, so a vector is
never served for another history.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..data.layout import DataLayout

MAX_CACHED_USERS = 50_000  # a vector each (a few hundred floats): tens of MB at most


class KnownUsers:
    """Every known user's rated items (catalogue rows), oldest first, loaded from the prepared data on first use."""

    def __init__(self, prepared_dir: Callable[[], Path]):
        self._prepared_dir = prepared_dir  # asked on the first query: a recommender with no known users never reads
        self._lock = threading.Lock()
        self._rows: dict[str, int] | None = None  # user id -> user_idx
        self._items = self._starts = None

    @classmethod
    def of(cls, params) -> "KnownUsers":
        return cls(lambda: DataLayout(params.data_root).prepared)

    def _load(self) -> None:
        prepared = self._prepared_dir()
        users = pd.read_parquet(prepared / "users.parquet", columns=["user_id", "user_idx"])
        events = pd.read_parquet(prepared / "events.parquet", columns=["user_idx", "item_idx", "timestamp"])
        user_idx = events["user_idx"].to_numpy(dtype=np.int64)
        # by user, then by time; lexsort is stable, so equal times keep the file's order (as `user_events` does)
        order = np.lexsort((events["timestamp"].to_numpy(), user_idx))
        n_users = int(max(users["user_idx"].max(), user_idx.max(initial=-1))) + 1 if len(users) else 0
        self._items = events["item_idx"].to_numpy(dtype=np.int64)[order]
        self._starts = np.concatenate([[0], np.cumsum(np.bincount(user_idx, minlength=n_users))])
        self._rows = dict(zip(users["user_id"].astype(str), users["user_idx"].astype(int)))

    def events(self, user_id: str) -> np.ndarray:
        """The catalogue rows the user rated, oldest first; KeyError for a user not in the prepared data."""
        if self._rows is None:
            with self._lock:
                if self._rows is None:
                    self._load()
        row = self._rows.get(str(user_id))
        if row is None:
            raise KeyError(f"unknown user {user_id!r} (not in {self._prepared_dir() / 'users.parquet'})")
        return self._items[self._starts[row]:self._starts[row + 1]]


class UserVectors:
    """User vectors by (user, history rows), the least recently used dropped beyond `capacity`."""

    def __init__(self, capacity: int = MAX_CACHED_USERS):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[bytes, np.ndarray]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, user: str, rows: np.ndarray) -> np.ndarray | None:
        key = np.ascontiguousarray(rows, dtype=np.int64).tobytes()
        with self._lock:
            entry = self._entries.get(user)
            if entry is None or entry[0] != key:
                self.misses += 1
                return None
            self._entries.move_to_end(user)
            self.hits += 1
            return entry[1]

    def put(self, user: str, rows: np.ndarray, vector: np.ndarray) -> None:
        vector = np.array(vector, dtype=np.float32)  # a copy of its own, read-only: callers cannot change it
        vector.flags.writeable = False
        with self._lock:
            self._entries[user] = (np.ascontiguousarray(rows, dtype=np.int64).tobytes(), vector)
            self._entries.move_to_end(user)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

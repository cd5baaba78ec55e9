"""Vectorised helpers for ragged per-user sequences stored as Arrow list columns."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def group_starts(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and lengths of runs of equal keys in an already sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [len(sorted_keys)]]))
    return starts, lengths


def group_starts_with_empty(sorted_users: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of every user 0..n_users-1 in a user-sorted array, zero-length for absent users."""
    lengths = np.bincount(sorted_users, minlength=n_users).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return starts, lengths


def gather_ranges(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    """A list column whose row r is values[starts[r] : starts[r] + lengths[r]]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    position = np.int32 if max(len(values), offsets[-1]) < 2**31 else np.int64  # 4 bytes a row when it fits
    index = np.repeat((np.asarray(starts, dtype=np.int64) - offsets[:-1]).astype(position), lengths)
    index += np.arange(offsets[-1], dtype=position)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values[index]))

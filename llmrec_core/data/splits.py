"""What every split of the prepared data shares: the split names, the item groups, the sequence files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = np.array(["train", "valid", "test"])
GROUPS = ("cold", "tail", "head")  # item_groups' names


def item_groups(train_count: np.ndarray, tail_fraction: float) -> np.ndarray:
    """cold: never in training; tail: the least popular `tail_fraction` of items; head: the rest."""
    order = np.argsort(train_count, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    groups = np.where(rank < int(round(tail_fraction * len(order))), "tail", "head").astype(object)
    groups[train_count == 0] = "cold"
    return groups


def write_sequences(path: Path, columns: dict, items: pa.ListArray) -> None:
    """A parquet file of per-user (or per user and domain) item sequences: `columns` plus the `items` list."""
    table = pa.table({**{k: pa.array(v) for k, v in columns.items()}, "items": items})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)

"""Readers that map real dataset formats onto the items/interactions contract.

Each format module offers `read_items(path, chunk_rows)` and `read_interactions(path, chunk_rows)`,
yielding `Batch`es of raw-keyed rows (`native_item`, and `genre` for items) that `ingest` turns
into contract rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ...config import SourceConfig
from . import amazon2018, amazon2023, movielens, recbole, table
from .common import Batch, InputError

_MODULES = {"amazon2018": amazon2018, "amazon2023": amazon2023, "movielens": movielens, "recbole": recbole}


def read_items(src: SourceConfig, path: Path, chunk_rows: int) -> Iterator[Batch]:
    if src.format == "table":
        return table.read_items(path, chunk_rows, src.columns)
    return _MODULES[src.format].read_items(path, chunk_rows)


def read_interactions(src: SourceConfig, path: Path, chunk_rows: int) -> Iterator[Batch]:
    if src.format == "table":
        return table.read_interactions(path, chunk_rows, src.columns, src.timestamp_unit)
    return _MODULES[src.format].read_interactions(path, chunk_rows)


__all__ = ["Batch", "InputError", "read_items", "read_interactions"]

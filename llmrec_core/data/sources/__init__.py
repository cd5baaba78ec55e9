"""Readers that map real dataset formats onto the items/interactions contract.

Each format module offers `read_items(path, chunk_rows)`, yielding `Batch`es of raw-keyed rows
(`native_item`, and `genre` for items), and `read_interactions(path, chunk_rows)`, yielding the fields
as text (user_id, native_item, timestamp, rating) with their line; `read_interactions` here types and
checks them in one place for every format (common.typed_interactions), and `ingest` turns both into
contract rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ...config import SourceConfig
from . import amazon2018, amazon2023, movielens, recbole, table
from .common import Batch, InputError, typed_interactions

TIMESTAMP_UNITS = {"amazon2023": "ms"}
_MODULES = {"amazon2018": amazon2018, "amazon2023": amazon2023, "movielens": movielens, "recbole": recbole}


def read_items(src: SourceConfig, path: Path, chunk_rows: int) -> Iterator[Batch]:
    """Batches of (items in the contract's columns, unreadable rows) from one source's item file, whatever its format."""
    if src.format == "table":
        return table.read_items(path, chunk_rows, src.columns)
    return _MODULES[src.format].read_items(path, chunk_rows)


def read_interactions(src: SourceConfig, path: Path, chunk_rows: int) -> Iterator[Batch]:
    """Batches of (interactions in the contract's columns, unreadable rows) from one source's interaction file, timestamps in seconds."""
    if src.format == "table":
        raw, unit = table.read_interactions(path, chunk_rows, src.columns), src.timestamp_unit
    else:
        raw, unit = _MODULES[src.format].read_interactions(path, chunk_rows), TIMESTAMP_UNITS.get(src.format, "s")
    for frame, bad in raw:
        yield typed_interactions(path, frame, bad, unit, src.rating_range)


__all__ = ["Batch", "InputError", "read_items", "read_interactions"]

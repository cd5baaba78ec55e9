"""Generic CSV/TSV/Parquet tables with a column map from params.yaml (`columns:` contract -> source).

For Parquet the reported "line" is the 1-based row number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .common import Batch, InputError, RawRows, bad_frame, iter_delimited


def _frames(path: Path, chunk_rows: int, wanted: list[str], ids: set[str]):
    name = path.name.lower()
    if name.endswith(".parquet"):
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{path}: not a readable Parquet file ({e})") from None
        missing = set(wanted) - set(pf.schema_arrow.names)
        if missing:
            raise InputError(f"{path}: missing columns {sorted(missing)}")
        start = 1
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=wanted):
            frame = pa.table({c: _as_text(path, c, batch.column(c), c in ids) for c in wanted}).to_pandas()
            frame["source_line"] = np.arange(start, start + len(frame), dtype=np.int64)
            start += len(frame)
            yield frame, bad_frame(path, [], [], [])
        return
    delimiter = "\t" if name.endswith((".tsv", ".tsv.gz", ".tab")) else ","
    for frame, bad in iter_delimited(path, chunk_rows, delimiter=delimiter):
        missing = set(wanted) - set(frame.columns)
        if missing:
            raise InputError(f"{path}: missing columns {sorted(missing)} (header has {', '.join(frame.columns[:-1])})")
        yield frame, bad


def _as_text(path: Path, name: str, column: pa.Array, is_id: bool) -> pa.Array:
    """A Parquet column as the text the readers of every format produce: integers of any width (nullable
    too) and strings exactly as stored, times as epoch seconds; floats are refused, since no id or time
    should be one and their text is not what was written."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        seconds = pc.cast(pc.cast(column, pa.timestamp("s", tz=getattr(kind, "tz", None))), pa.int64())
        return pc.cast(seconds, pa.string())
    if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.cast(column, pa.string())
    if pa.types.is_dictionary(kind):
        return _as_text(path, name, column.dictionary_decode(), is_id)
    if pa.types.is_floating(kind) and not is_id:
        return pc.cast(column, pa.string())
    raise InputError(f"{path}: column {name!r} has type {kind}; " +
                     ("ids must be integers or strings" if is_id else "expected numbers, strings or times"))


def read_items(path: Path, chunk_rows: int, columns: dict[str, str]) -> Iterator[Batch]:
    """Items of a CSV/TSV/Parquet table, its columns mapped onto the contract by `columns`."""
    mapping = {columns["item_id"]: "native_item", columns["title"]: "title"}
    for optional in ("genre", "brand", "categories", "description"):
        if optional in columns:
            mapping[columns[optional]] = optional
    for frame, bad in _frames(path, chunk_rows, list(mapping), {columns["item_id"]}):
        rows = frame.rename(columns=mapping)
        for col in ("native_item", "title", "genre", "brand", "categories", "description"):
            rows[col] = rows[col].astype("string") if col in rows else pd.Series(pd.NA, index=rows.index, dtype="string")
        yield Batch(rows, bad)


def read_interactions(path: Path, chunk_rows: int, columns: dict[str, str]) -> Iterator[RawRows]:
    """Interactions of a CSV/TSV/Parquet table, its columns mapped onto the contract by `columns`."""
    mapping = {columns["user_id"]: "user_id", columns["item_id"]: "native_item", columns["timestamp"]: "timestamp"}
    if "rating" in columns:
        mapping[columns["rating"]] = "rating"
    for frame, bad in _frames(path, chunk_rows, list(mapping), {columns["user_id"], columns["item_id"]}):
        yield frame.rename(columns=mapping), bad

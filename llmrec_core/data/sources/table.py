"""Generic CSV/TSV/Parquet tables with a column map from params.yaml (`columns:` contract -> source).

For Parquet the reported "line" is the 1-based row number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .common import Batch, InputError, bad_frame, iter_delimited, typed_interactions


def _frames(path: Path, chunk_rows: int, wanted: list[str]):
    name = path.name.lower()
    if name.endswith(".parquet"):
        pf = pq.ParquetFile(path)
        missing = set(wanted) - set(pf.schema_arrow.names)
        if missing:
            raise InputError(f"{path}: missing columns {sorted(missing)}")
        start = 1
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=wanted):
            frame = batch.to_pandas()
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


def read_items(path: Path, chunk_rows: int, columns: dict[str, str]) -> Iterator[Batch]:
    mapping = {columns["item_id"]: "native_item", columns["title"]: "title"}
    for optional in ("genre", "brand", "categories", "description"):
        if optional in columns:
            mapping[columns[optional]] = optional
    for frame, bad in _frames(path, chunk_rows, list(mapping)):
        rows = frame.rename(columns=mapping)
        for col in ("native_item", "title", "genre", "brand", "categories", "description"):
            rows[col] = rows[col].astype("string") if col in rows else pd.Series(pd.NA, index=rows.index, dtype="string")
        yield Batch(rows, bad)


def read_interactions(path: Path, chunk_rows: int, columns: dict[str, str], unit: str) -> Iterator[Batch]:
    mapping = {columns["user_id"]: "user_id", columns["item_id"]: "native_item", columns["timestamp"]: "timestamp"}
    if "rating" in columns:
        mapping[columns["rating"]] = "rating"
    for frame, bad in _frames(path, chunk_rows, list(mapping)):
        yield typed_interactions(path, frame.rename(columns=mapping), bad, unit=unit)

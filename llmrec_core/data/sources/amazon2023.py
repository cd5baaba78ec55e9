"""Amazon Reviews 2023: `<Category>.jsonl[.gz]` reviews and `meta_<Category>.jsonl[.gz]`.

Items are keyed by `parent_asin` (variants share it); review timestamps are milliseconds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from .amazon2018 import _join_text
from .common import Batch, RawRows, iter_json_records


def read_items(path: Path, chunk_rows: int) -> Iterator[Batch]:
    """Items of an Amazon Reviews 2023 metadata file (JSON lines), keyed by parent_asin, with their title text."""
    fields = ["parent_asin", "title", "store", "categories", "description"]
    for frame, bad in iter_json_records(path, chunk_rows, fields):
        rows = pd.DataFrame(
            {
                "native_item": frame["parent_asin"].astype("string"),
                "title": frame["title"].astype("string"),
                "genre": pd.Series(pd.NA, index=frame.index, dtype="string"),
                "brand": frame["store"].map(_join_text).astype("string"),
                "categories": frame["categories"].map(_join_text).astype("string"),
                "description": frame["description"].map(_join_text).astype("string"),
                "source_line": frame["source_line"],
            }
        )
        yield Batch(rows, bad)


def read_interactions(path: Path, chunk_rows: int) -> Iterator[RawRows]:
    """Ratings of an Amazon Reviews 2023 review file (JSON lines): user_id, parent_asin, rating, timestamp in ms."""
    fields = ["user_id", "parent_asin", "rating", "timestamp"]
    for frame, bad in iter_json_records(path, chunk_rows, fields):
        frame = frame.rename(columns={"parent_asin": "native_item"})
        yield frame, bad

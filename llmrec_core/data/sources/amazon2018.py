"""Amazon Reviews 2018 (and the 2014 release's Python-literal meta lines).

Interactions: ratings-only CSV `item,user,rating,time` (`<Category>.csv[.gz]`) or reviews
JSON lines (`reviews_<Category>[_5].json[.gz]`, `<Category>_5.json.gz`). Items: `meta_<Category>.json[.gz]`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from .common import Batch, RawRows, iter_delimited, iter_json_records, open_binary, read_errors

RATING_COLUMNS = ["native_item", "user_id", "rating", "timestamp"]


def _join_text(value) -> str | None:
    """Meta fields are strings, lists of strings or (2014) lists of lists."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        flat = []
        for v in value:
            flat.extend(v if isinstance(v, (list, tuple)) else [v])
        return " | ".join(str(v) for v in flat if v not in (None, ""))
    return str(value)


def read_items(path: Path, chunk_rows: int) -> Iterator[Batch]:
    """Items of an Amazon 2018 (or 2014) metadata file `meta_<Category>.json[.gz]`: asin, title."""
    fields = ["asin", "title", "brand", "category", "categories", "description"]
    for frame, bad in iter_json_records(path, chunk_rows, fields, allow_python_literal=True):
        categories = frame["category"].where(frame["category"].notna(), frame["categories"])
        rows = pd.DataFrame(
            {
                "native_item": frame["asin"].astype("string"),
                "title": frame["title"].astype("string"),
                "genre": pd.Series(pd.NA, index=frame.index, dtype="string"),
                "brand": frame["brand"].map(_join_text).astype("string"),
                "categories": categories.map(_join_text).astype("string"),
                "description": frame["description"].map(_join_text).astype("string"),
                "source_line": frame["source_line"],
            }
        )
        yield Batch(rows, bad)


def _has_header(path: Path) -> bool:
    with read_errors(path), open_binary(path) as fh:
        first = fh.readline().decode("utf-8", errors="replace").lower()
    return "user" in first and "item" in first or "asin" in first


def read_interactions(path: Path, chunk_rows: int) -> Iterator[RawRows]:
    """Ratings of an Amazon 2018 ratings-only CSV or reviews JSON-lines file: user, item, rating, time."""
    name = path.name.lower()
    if ".csv" in name:
        yield from _read_ratings_csv(path, chunk_rows)
    else:
        yield from _read_reviews_json(path, chunk_rows)


def _read_ratings_csv(path: Path, chunk_rows: int) -> Iterator[RawRows]:
    header = _has_header(path)
    for frame, bad in iter_delimited(path, chunk_rows, delimiter=",", column_names=None if header else RATING_COLUMNS):
        if header:
            frame = frame.rename(columns=dict(zip(frame.columns[:4], RATING_COLUMNS)))
        yield frame, bad


def _read_reviews_json(path: Path, chunk_rows: int) -> Iterator[RawRows]:
    fields = ["reviewerID", "asin", "overall", "unixReviewTime"]
    for frame, bad in iter_json_records(path, chunk_rows, fields):
        frame = frame.rename(
            columns={"reviewerID": "user_id", "asin": "native_item", "overall": "rating", "unixReviewTime": "timestamp"}
        )
        yield frame, bad

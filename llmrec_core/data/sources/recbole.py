"""RecBole atomic files: tab-separated `.inter` and `.item` with typed headers (`item_id:token`).

Item title: the first of `title`, `movie_title`, `item_name`, `name`; genre (for
`domain_from: first_genre`): the first token of `class`, `genre`, `genres` or `categories`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from .common import Batch, RawRows, InputError, iter_delimited

TITLE_FIELDS = ("title", "movie_title", "item_name", "name")
GENRE_FIELDS = ("class", "genre", "genres", "categories")


def _stream(path: Path, chunk_rows: int):
    """Rows with the `:type` suffixes stripped from the header."""
    for frame, bad in iter_delimited(path, chunk_rows, delimiter="\t", quoting=False):
        yield frame.rename(columns=lambda c: c.split(":")[0] if c != "source_line" else c), bad


def _pick(columns, candidates, path: Path, what: str, required: bool = True):
    for c in candidates:
        if c in columns:
            return c
    if required:
        raise InputError(f"{path}: no {what} column (looked for {', '.join(candidates)}; found {', '.join(columns)})")
    return None


def read_items(path: Path, chunk_rows: int) -> Iterator[Batch]:
    """Items of a RecBole atomic `.item` file: its id, title and (optional) genre columns."""
    for frame, bad in _stream(path, chunk_rows):
        cols = [c for c in frame.columns if c != "source_line"]
        if "item_id" not in cols:
            raise InputError(f"{path}: no item_id column in header")
        title = _pick(cols, TITLE_FIELDS, path, "title")
        genre = _pick(cols, GENRE_FIELDS, path, "genre", required=False)
        genres = frame[genre].astype("string").str.strip().str.split(" ").str[0] if genre else pd.NA
        rows = pd.DataFrame({"native_item": frame["item_id"], "title": frame[title], "genre": genres,
                             "source_line": frame["source_line"]})
        rows["genre"] = rows["genre"].astype("string").replace("", pd.NA)
        yield Batch(rows, bad)


def read_interactions(path: Path, chunk_rows: int) -> Iterator[RawRows]:
    """Interactions of a RecBole atomic `.inter` file: user, item, rating (optional), timestamp."""
    for frame, bad in _stream(path, chunk_rows):
        missing = {"user_id", "item_id", "timestamp"} - set(frame.columns)
        if missing:
            raise InputError(f"{path}: missing columns {sorted(missing)} in header")
        yield frame.rename(columns={"item_id": "native_item"}), bad

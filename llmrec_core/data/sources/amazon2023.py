"""Amazon Reviews 2023: `<Category>.jsonl[.gz]` reviews and `meta_<Category>.jsonl[.gz]`.

Items are keyed by `parent_asin` (variants share it); review timestamps are milliseconds. A title is text;
one written as an object takes its `"en"` text, else its first text value; one written as a list joins its
text elements with a space; a title of any other type, or an object or list without text, is quarantined with
the reason (never kept as its Python repr).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from .amazon2018 import _join_text
from .common import Batch, RawRows, bad_frame, iter_json_records


def title_text(value) -> tuple[str | None, str]:
    """(the title's text, "") or (None, why it has none usable); a missing title is (None, "") for validation."""
    if value is None or isinstance(value, str):
        return value, ""
    if isinstance(value, dict):
        english = value.get("en")
        texts = [english] if isinstance(english, str) and english.strip() else \
            [v for v in value.values() if isinstance(v, str) and v.strip()]
        return (texts[0], "") if texts else (None, "title is an object without text")
    if isinstance(value, list):
        texts = [v for v in value if isinstance(v, str) and v.strip()]
        return (" ".join(texts), "") if texts else (None, "title is a list without text")
    return None, f"title is a {type(value).__name__}, not text"


def read_items(path: Path, chunk_rows: int) -> Iterator[Batch]:
    """Items of an Amazon Reviews 2023 metadata file (JSON lines), keyed by parent_asin, with their title text."""
    fields = ["parent_asin", "title", "store", "categories", "description"]
    for frame, bad in iter_json_records(path, chunk_rows, fields):
        titles, reasons = zip(*map(title_text, frame["title"])) if len(frame) else ((), ())
        unusable = pd.Series(reasons, index=frame.index, dtype="string").ne("").to_numpy(dtype=bool)
        if unusable.any():
            bad = pd.concat([bad, bad_frame(path, frame["source_line"][unusable].tolist(),
                                            [r for r in reasons if r], frame[fields][unusable].to_dict("records"))],
                            ignore_index=True)
        rows = pd.DataFrame(
            {
                "native_item": frame["parent_asin"].astype("string"),
                "title": pd.Series(titles, index=frame.index, dtype="string"),
                "genre": pd.Series(pd.NA, index=frame.index, dtype="string"),
                "brand": frame["store"].map(_join_text).astype("string"),
                "categories": frame["categories"].map(_join_text).astype("string"),
                "description": frame["description"].map(_join_text).astype("string"),
                "source_line": frame["source_line"],
            }
        )
        yield Batch(rows[~unusable].reset_index(drop=True), bad)


def read_interactions(path: Path, chunk_rows: int) -> Iterator[RawRows]:
    """Ratings of an Amazon Reviews 2023 review file (JSON lines): user_id, parent_asin, rating, timestamp in ms."""
    fields = ["user_id", "parent_asin", "rating", "timestamp"]
    for frame, bad in iter_json_records(path, chunk_rows, fields):
        frame = frame.rename(columns={"parent_asin": "native_item"})
        yield frame, bad

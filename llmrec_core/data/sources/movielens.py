"""MovieLens: ml-100k (`u.data`, `u.item`), ml-1m (`ratings.dat`, `movies.dat`) and
ml-latest / ml-25m style CSV (`ratings.csv`, `movies.csv`). The flavour is read from the file
names. Old releases are Latin-1 encoded; the CSV releases are UTF-8.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from .common import Batch, RawRows, bad_rows, iter_delimited, iter_text_lines

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


def _flavour(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.startswith("u.") or name.startswith("u1.") or name in ("u.data", "u.item"):
        return "100k"
    if name.endswith(".dat"):
        return "1m"
    if name.endswith(".csv"):
        return "latest"
    raise ValueError(f"{path}: not a MovieLens file name (u.data/u.item, *.dat or *.csv)")


def _first_genre(genres: pd.Series) -> pd.Series:
    first = genres.astype("string").str.split("|").str[0].str.strip()
    return first.where(~first.isin(["", "(no genres listed)"]))


def read_items(path: Path, chunk_rows: int) -> Iterator[Batch]:
    """Movies of a MovieLens item file (ml-100k `u.item`, ml-1m `*.dat` or ml-latest `*.csv`): id, title, genres."""
    flavour = _flavour(path)
    if flavour == "latest":
        for frame, bad in iter_delimited(path, chunk_rows, delimiter=","):
            rows = pd.DataFrame({"native_item": frame["movieId"], "title": frame["title"],
                                 "genre": _first_genre(frame["genres"]), "source_line": frame["source_line"]})
            yield Batch(rows, bad)
        return
    for numbers, texts, bad in iter_text_lines(path, chunk_rows, encoding="latin-1"):
        records, lines, malformed = [], [], []
        for number, text in zip(numbers, texts):
            parts = text.split("|") if flavour == "100k" else text.split("::")
            if flavour == "100k" and len(parts) == 24:
                flags = parts[5:24]
                genre = next((g for g, f in zip(ML100K_GENRES, flags) if f == "1"), None)
                records.append((parts[0], parts[1], genre))
            elif flavour == "1m" and len(parts) == 3:
                records.append((parts[0], parts[1], parts[2].split("|")[0] or None))
            else:
                malformed.append((number, f"unexpected number of fields: {len(parts)}", text))
                continue
            lines.append(number)
        rows = pd.DataFrame(records, columns=["native_item", "title", "genre"], dtype="string")
        rows["source_line"] = pd.Series(lines, dtype="int64")
        yield Batch(rows, pd.concat([bad, bad_rows(path, malformed)], ignore_index=True))


def read_interactions(path: Path, chunk_rows: int) -> Iterator[RawRows]:
    """Ratings of a MovieLens ratings file (ml-100k `u.data`, ml-1m `*.dat` or ml-latest `*.csv`)."""
    flavour = _flavour(path)
    if flavour == "100k":
        names = ["user_id", "native_item", "rating", "timestamp"]
        stream = iter_delimited(path, chunk_rows, delimiter="\t", column_names=names, quoting=False)
    elif flavour == "1m":  # `a::b::c::d`: split on ':' and keep every other field
        names = ["user_id", "_1", "native_item", "_2", "rating", "_3", "timestamp"]
        stream = iter_delimited(path, chunk_rows, delimiter=":", column_names=names, quoting=False)
    else:
        stream = (
            (frame.rename(columns={"userId": "user_id", "movieId": "native_item"}), bad)
            for frame, bad in iter_delimited(path, chunk_rows, delimiter=",")
        )
    for frame, bad in stream:
        yield frame, bad

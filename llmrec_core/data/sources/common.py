"""Streaming building blocks shared by the readers.

Readers never hold a raw file whole: delimited files stream through pyarrow's CSV reader in
blocks, JSON-lines files are parsed a chunk of lines at a time. Anything that cannot be parsed
becomes a quarantine row (file, line, reason, raw record) instead of disappearing.
"""
from __future__ import annotations

import ast
import gzip
import html
import json
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ...errors import UserError

RAW_PREVIEW_CHARS = 500


class InputError(UserError, ValueError):
    """A whole input file is unusable (missing, empty, wrong header); the message names it."""


RawRows = tuple[pd.DataFrame, pd.DataFrame]  # (interaction fields as text + source_line, quarantined records)


@dataclass
class Batch:
    """Contract rows (+ source_file, source_line) and the records that could not be read."""

    rows: pd.DataFrame
    bad: pd.DataFrame


def bad_frame(file: Path | str, lines, reasons, records) -> pd.DataFrame:
    """Quarantine rows (file, line, reason, raw record) in the contract's quarantine schema."""
    return pd.DataFrame(
        {
            "source_file": pd.Series([str(file)] * len(lines), dtype="string"),
            "source_line": pd.Series(lines, dtype="int64"),
            "reason": pd.Series(reasons, dtype="string"),
            "record": pd.Series([str(r)[:RAW_PREVIEW_CHARS] for r in records], dtype="string"),
        }
    )


def bad_rows(file: Path | str, rows: list[tuple[int, str, object]]) -> pd.DataFrame:
    """Quarantine rows from (line, reason, raw record) tuples."""
    return bad_frame(file, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def check_input_file(path: Path, role: str) -> Path:
    """Refuse a missing path, a path that is not a file, or an empty file, naming the file and its role."""
    if not path.exists():
        raise InputError(f"{path}: {role} file not found")
    if not path.is_file():
        raise InputError(f"{path}: {role} path is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: {role} file is empty")
    return path


def open_binary(path: Path) -> IO[bytes]:
    """Open a file, transparently gunzipping `.gz`."""
    if path.suffix != ".gz":
        return open(path, "rb")
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            raise InputError(f"{path}: named .gz but not gzip-compressed")
    return gzip.open(path, "rb")


def iter_text_lines(
    path: Path, chunk_rows: int, encoding: str = "utf-8"
) -> Iterator[tuple[list[int], list[str], pd.DataFrame]]:
    """Yield (line numbers, decoded lines, undecodable lines) chunk by chunk; blank lines are skipped."""
    numbers: list[int] = []
    texts: list[str] = []
    bad: list[tuple[int, str, bytes]] = []
    seen_any = False
    with read_errors(path), open_binary(path) as fh:
        for number, raw in enumerate(fh, start=1):
            seen_any = True
            try:
                text = raw.decode(encoding).strip()
            except UnicodeDecodeError as e:
                bad.append((number, f"invalid {encoding} byte at offset {e.start}", raw))
                continue
            if not text:
                continue
            numbers.append(number)
            texts.append(text)
            if len(numbers) >= chunk_rows:
                yield numbers, texts, bad_rows(path, bad)
                numbers, texts, bad = [], [], []
    if not seen_any:
        raise InputError(f"{path}: file is empty")
    if numbers or bad:
        yield numbers, texts, bad_rows(path, bad)


def parse_json_object(text: str, allow_python_literal: bool = False) -> dict:
    """One JSON object per line; old Amazon meta files use Python-literal dicts instead."""
    try:  # numbers keep their text (ids exactly as written; a rating of 1e400 stays "1e400" for the quarantine)
        obj = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as e:
        if not allow_python_literal:
            raise ValueError(f"malformed JSON: {e.msg} at column {e.colno}") from None
        try:
            obj = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"malformed JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def iter_json_records(
    path: Path, chunk_rows: int, fields: list[str], allow_python_literal: bool = False
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Yield (records with the wanted fields + source_line, quarantined lines) per chunk."""
    for numbers, texts, bad in iter_text_lines(path, chunk_rows):
        records, lines, unparsed = [], [], []
        for number, text in zip(numbers, texts):
            try:
                obj = parse_json_object(text, allow_python_literal)
            except ValueError as e:
                unparsed.append((number, str(e), text))
                continue
            records.append([obj.get(f) for f in fields])
            lines.append(number)
        frame = pd.DataFrame(records, columns=fields)
        frame["source_line"] = np.asarray(lines, dtype="int64")
        yield frame, pd.concat([bad, bad_rows(path, unparsed)], ignore_index=True)


def iter_delimited(
    path: Path,
    chunk_rows: int,
    *,
    delimiter: str,
    column_names: list[str] | None = None,
    encoding: str = "utf-8",
    quoting: bool = True,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Stream a delimited file as string columns (+ source_line); rows with the wrong number
    of fields or invalid UTF-8 are quarantined with their line number.

    `column_names=None` means the first line is a header. Every physical line is either a row
    or reported, so line numbers stay exact; a file whose quoted fields span lines is refused.
    """
    skipped: list[tuple[int, str, str]] = []

    def on_invalid_row(row) -> str:
        if row.number is None or row.number < 1:  # pyarrow lost count (after a quoted multi-line field)
            raise InputError(f"{path}: a quoted field spans several lines before a malformed row; such files are "
                             f"refused, since their line numbers could not be reported exactly")
        if row.text.strip():
            skipped.append((row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}", row.text))
        else:
            skipped.append((row.number, "", ""))  # a blank line: not a record
        return "skip"

    transcode = encoding.lower().replace("-", "") not in ("utf8",)
    has_header = column_names is None
    header = column_names if not has_header else _read_header(path, delimiter, encoding)
    reader = _open_reader(path, header, has_header, delimiter, encoding, quoting, chunk_rows, on_invalid_row,
                          pa.string() if transcode else pa.binary())
    next_line = 2 if has_header else 1
    any_rows = False
    for batch in _guarded_stream(path, reader):
        any_rows = True
        skipped_lines = {s[0] for s in skipped}
        lines = _assign_lines(next_line, batch.num_rows, skipped_lines)
        if len(lines):
            next_line = int(lines[-1]) + 1
        frame, bad_utf8 = _decode_batch(path, batch, lines, transcode)
        _refuse_multiline(path, frame)
        frame, blank = _drop_empty_records(path, frame)
        real_skips = [s for s in skipped if s[1]]
        skipped.clear()
        yield frame, pd.concat([bad_rows(path, real_skips), bad_utf8, blank], ignore_index=True)
    real_skips = [s for s in skipped if s[1]]
    if real_skips:
        yield pd.DataFrame(columns=[*header, "source_line"]), bad_rows(path, real_skips)
    elif not any_rows and not has_header:
        raise InputError(f"{path}: file is empty")


def _open_reader(path: Path, header: list[str], has_header: bool, delimiter: str, encoding: str, quoting: bool,
                 chunk_rows: int, on_invalid_row, string_type):
    """pyarrow's streaming CSV reader over `path`, every column read as `string_type`."""
    # names are given explicitly (the header line skipped), so every column is typed as text below: an id's
    # type is never guessed from its values, whatever the header looks like (a byte-order mark, say)
    read_options = pacsv.ReadOptions(
        use_threads=False,
        block_size=max(1 << 20, chunk_rows * 64),
        column_names=header,
        skip_rows=1 if has_header else 0,
        encoding=encoding,
    )
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoting else False,
        ignore_empty_lines=False,
        invalid_row_handler=on_invalid_row,
    )
    convert_options = pacsv.ConvertOptions(
        column_types={c: string_type for c in header}, strings_can_be_null=False, quoted_strings_can_be_null=False
    )
    try:
        with read_errors(path):
            reader = pacsv.open_csv(path, read_options=read_options, parse_options=parse_options,
                                    convert_options=convert_options)
    except InputError as e:
        if "Empty CSV file" in str(e):
            raise InputError(f"{path}: file is empty") from None
        raise
    return reader


def _drop_empty_records(path: Path, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """pyarrow reads a blank line (or one of bare delimiters) as a row of empty fields: not a record. Returns the
    frame without them, and them as quarantine rows."""
    empty = (frame.drop(columns="source_line") == "").all(axis=1).to_numpy()
    blank = bad_frame(path, frame["source_line"][empty].tolist(),
                      ["empty record (a blank line or only delimiters)"] * int(empty.sum()), [""] * int(empty.sum()))
    return frame[~empty].reset_index(drop=True), blank


def _refuse_multiline(path: Path, frame: pd.DataFrame) -> None:
    """A quoted field holding a line break makes one record span several lines, and every line number after
    it would be wrong: such a file is refused, naming the first such record."""
    for column in frame.columns.drop("source_line"):
        spans = frame[column].str.contains(r"[\r\n]", regex=True, na=False).to_numpy()
        if spans.any():
            line = int(frame["source_line"].to_numpy()[spans.argmax()])
            raise InputError(f"{path}: line {line}: a quoted field spans several lines; such files are refused, "
                             f"since their line numbers could not be reported exactly")


def _read_header(path: Path, delimiter: str, encoding: str) -> list[str]:
    with read_errors(path):
        with open_binary(path) as fh:
            raw = fh.readline()
    codec = "utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding  # drop a byte-order mark
    first = raw.decode(codec, errors="replace").strip()
    if not first:
        raise InputError(f"{path}: file is empty or has no header line")
    header = [c.strip().strip('"') for c in first.split(delimiter)]
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise InputError(f"{path}: header names {', '.join(map(repr, twice))} more than once")
    return header


@contextmanager
def read_errors(path: Path):
    """A file that cannot be read to the end (truncated or corrupt compression, unparseable text) is refused,
    naming the file; nothing of it is half-used."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: truncated or corrupt compressed file ({e})") from None
    except pa.ArrowInvalid as e:
        message = str(e).splitlines()[0]
        if "gzip" in message.lower() or "compress" in message.lower():
            raise InputError(f"{path}: truncated or corrupt compressed file ({message})") from None
        raise InputError(f"{path}: cannot be read as delimited text: {message}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read: {e}") from None


def _guarded_stream(path: Path, reader):
    with read_errors(path):
        yield from reader


def _assign_lines(start: int, n: int, skipped: set[int]) -> np.ndarray:
    """Line numbers of the next n valid rows, from `start`, stepping over reported lines."""
    candidates = np.arange(start, start + n + len(skipped), dtype=np.int64)
    if skipped:
        candidates = candidates[~np.isin(candidates, np.fromiter(skipped, dtype=np.int64))]
    return candidates[:n]


def _decode_batch(path: Path, batch: pa.RecordBatch, lines: np.ndarray, already_text: bool):
    if already_text:
        frame = batch.to_pandas(types_mapper=pd.ArrowDtype).astype("string")
        frame["source_line"] = lines
        return frame, bad_frame(path, [], [], [])
    columns, bad_mask = {}, np.zeros(batch.num_rows, dtype=bool)
    for name, col in zip(batch.schema.names, batch.columns):
        try:
            columns[name] = pc.cast(col, pa.string())
        except pa.ArrowInvalid:  # rare: find the offending rows one by one
            values = []
            for i, v in enumerate(col.to_pylist()):
                try:
                    values.append(v.decode("utf-8"))
                except UnicodeDecodeError:
                    values.append(None)
                    bad_mask[i] = True
            columns[name] = pa.array(values, type=pa.string())
    frame = pa.table(columns).to_pandas().astype("string")
    frame["source_line"] = lines
    bad = frame[bad_mask]
    records = [",".join(str(x) for x in r) for r in bad.drop(columns="source_line").itertuples(index=False)]
    return frame[~bad_mask].reset_index(drop=True), bad_frame(
        path, bad["source_line"].tolist(), ["invalid UTF-8 bytes"] * len(bad), records
    )


MAX_EPOCH_SECONDS = 2**62 // 1000  # beyond any real date; far from int64 overflow in seconds or milliseconds


def parse_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Text to float64; returns (values, mask of entries that are not a finite number). Missing -> NaN, flagged."""
    numeric = pd.to_numeric(values.astype("string").str.strip(), errors="coerce").to_numpy(dtype="float64",
                                                                                            na_value=np.nan)
    return numeric, ~np.isfinite(numeric)


def to_epoch_seconds(values: pd.Series, unit: str = "s") -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse a column of numbers into int64 epoch seconds; returns (values, mask of entries that are not a
    finite number, mask of numbers too large to be a time, which int64 could not hold)."""
    numeric, not_number = parse_numbers(values)
    if unit == "ms":
        numeric = numeric / 1000
    too_large = np.abs(np.nan_to_num(numeric, nan=0.0, posinf=0.0, neginf=0.0)) > MAX_EPOCH_SECONDS
    usable = ~(not_number | too_large)
    seconds = np.floor(np.where(usable, numeric, 0.0)).astype("int64")
    return pd.Series(seconds, index=values.index), not_number, too_large


def clean_titles(titles: pd.Series) -> pd.Series:
    """HTML-unescape and collapse whitespace; missing titles become "" (validation rejects them)."""
    titles = titles.astype("string").fillna("")
    has_entity = titles.str.contains("&", regex=False)
    if has_entity.any():
        titles = titles.copy()
        titles[has_entity] = titles[has_entity].map(html.unescape)
    return titles.str.replace(r"\s+", " ", regex=True).str.strip()


def with_provenance(frame: pd.DataFrame, path: Path, columns: list[str]) -> pd.DataFrame:
    """Add each row's source file and line, so any later report can point back at it."""
    out = frame[columns + ["source_line"]].copy()
    out.insert(len(columns), "source_file", pd.Series(str(path), index=out.index, dtype="string"))
    out["source_line"] = out["source_line"].astype("int64")
    return out.reset_index(drop=True)


def typed_interactions(path: Path, frame: pd.DataFrame, bad: pd.DataFrame, unit: str = "s",
                       rating_range: tuple[float, float] | None = None) -> Batch:
    """Raw interaction columns (user_id, native_item, timestamp, rating, source_line: text as read) to typed
    rows. A row is quarantined, with the raw text of the field in its reason and record, when its timestamp is
    not a usable number, or when it has a rating that is not a finite number (in `rating_range` if given).
    An empty rating is kept as missing."""
    timestamps, not_number, too_large = to_epoch_seconds(frame["timestamp"], unit)
    reasons = np.where(not_number, "timestamp is not a number",
                       np.where(too_large, "timestamp is too large to be a time", ""))
    ratings = np.full(len(frame), np.nan)
    if "rating" in frame:
        text = frame["rating"].astype("string").str.strip()
        present = (text.fillna("") != "").to_numpy()
        ratings, not_number = parse_numbers(text)
        bad_rating = present & not_number
        if rating_range is not None:
            low, high = rating_range
            bad_rating |= present & ~not_number & ((ratings < low) | (ratings > high))
        ratings = np.where(present & ~bad_rating, ratings, np.nan)
        reasons = np.where((reasons == "") & bad_rating, "rating is not a number" + (
            f" in [{rating_range[0]:g}, {rating_range[1]:g}]" if rating_range else ""), reasons)
    rejected = reasons != ""
    if rejected.any():
        quarantined = frame[rejected]
        raw = [q["timestamp"] if r.startswith("timestamp") else q["rating"]  # the field's text as read
               for q, r in zip(quarantined.to_dict("records"), reasons[rejected])]
        records = [str(r) for r in quarantined.drop(columns="source_line").to_dict("records")]
        bad = pd.concat([bad, bad_frame(path, quarantined["source_line"].tolist(),
                                        [f"{r}: {v!r}" for r, v in zip(reasons[rejected], raw)], records)],
                        ignore_index=True)
    keep = ~rejected
    rows = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("string").to_numpy()[keep],
            "native_item": frame["native_item"].astype("string").to_numpy()[keep],
            "timestamp": timestamps.to_numpy(dtype="int64")[keep],
            "rating": np.asarray(ratings, dtype="float64")[keep],
            "source_line": frame["source_line"].to_numpy(dtype="int64")[keep],
        }
    )
    return Batch(rows, bad)

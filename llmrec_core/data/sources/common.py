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


@dataclass
class Batch:
    """Contract rows (+ source_file, source_line) and the records that could not be read."""

    rows: pd.DataFrame
    bad: pd.DataFrame


def bad_frame(file: Path | str, lines, reasons, records) -> pd.DataFrame:
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
    if not path.exists():
        raise InputError(f"{path}: {role} file not found")
    if not path.is_file():
        raise InputError(f"{path}: {role} path is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: {role} file is empty")
    return path


def open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_text_lines(
    path: Path, chunk_rows: int, encoding: str = "utf-8"
) -> Iterator[tuple[list[int], list[str], pd.DataFrame]]:
    """Yield (line numbers, decoded lines, undecodable lines) chunk by chunk; blank lines are skipped."""
    numbers: list[int] = []
    texts: list[str] = []
    bad: list[tuple[int, str, bytes]] = []
    seen_any = False
    with open_binary(path) as fh:
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
    try:
        obj = json.loads(text)
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
    or reported, so line numbers stay exact (quoted fields spanning lines are not supported).
    """
    skipped: list[tuple[int, str, str]] = []

    def on_invalid_row(row) -> str:
        if row.text.strip():
            skipped.append((row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}", row.text))
        else:
            skipped.append((row.number, "", ""))  # a blank line: not a record
        return "skip"

    transcode = encoding.lower().replace("-", "") not in ("utf8",)
    read_options = pacsv.ReadOptions(
        use_threads=False,
        block_size=max(1 << 20, chunk_rows * 64),
        column_names=column_names,
        encoding=encoding,
    )
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoting else False,
        ignore_empty_lines=False,
        invalid_row_handler=on_invalid_row,
    )
    header = column_names
    if header is None:
        with open_binary(path) as fh:
            first = fh.readline().decode(encoding, errors="replace").strip()
        if not first:
            raise InputError(f"{path}: file is empty or has no header line")
        header = [c.strip().strip('"') for c in first.split(delimiter)]
    string_type = pa.string() if transcode else pa.binary()
    convert_options = pacsv.ConvertOptions(
        column_types={c: string_type for c in header}, strings_can_be_null=False, quoted_strings_can_be_null=False
    )
    try:
        reader = pacsv.open_csv(path, read_options=read_options, parse_options=parse_options, convert_options=convert_options)
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise InputError(f"{path}: file is empty") from None
        raise InputError(f"{path}: cannot be read as delimited text: {e}") from None

    next_line = 1 if column_names is not None else 2
    any_rows = False
    for batch in reader:
        any_rows = True
        skipped_lines = {s[0] for s in skipped}
        lines = _assign_lines(next_line, batch.num_rows, skipped_lines)
        if len(lines):
            next_line = int(lines[-1]) + 1
        frame, bad_utf8 = _decode_batch(path, batch, lines, transcode)
        real_skips = [s for s in skipped if s[1]]
        skipped.clear()
        yield frame, pd.concat([bad_rows(path, real_skips), bad_utf8], ignore_index=True)
    real_skips = [s for s in skipped if s[1]]
    if real_skips:
        yield pd.DataFrame(columns=[*header, "source_line"]), bad_rows(path, real_skips)
    elif not any_rows and column_names is not None:
        raise InputError(f"{path}: file is empty")


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


def to_epoch_seconds(values: pd.Series, unit: str = "s") -> tuple[pd.Series, np.ndarray]:
    """Parse a column of numbers into int64 epoch seconds; returns (values, mask of unparseable)."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna().to_numpy()
    if unit == "ms":
        numeric = numeric // 1000
    return numeric.fillna(0).astype("int64"), bad


def clean_titles(titles: pd.Series) -> pd.Series:
    """HTML-unescape and collapse whitespace; missing titles become "" (validation rejects them)."""
    titles = titles.astype("string").fillna("")
    has_entity = titles.str.contains("&", regex=False)
    if has_entity.any():
        titles = titles.copy()
        titles[has_entity] = titles[has_entity].map(html.unescape)
    return titles.str.replace(r"\s+", " ", regex=True).str.strip()


def quarantine_unparseable(frame: pd.DataFrame, mask: np.ndarray, path: Path, reason: str, column: str):
    """Split rows flagged by `mask` off into quarantine rows with `reason: <value>`."""
    bad = frame[mask]
    reasons = [f"{reason}: {v!r}" for v in bad[column].tolist()]
    records = [str(r) for r in bad.drop(columns="source_line").to_dict("records")]
    return frame[~mask], bad_frame(path, bad["source_line"].tolist(), reasons, records)


def with_provenance(frame: pd.DataFrame, path: Path, columns: list[str]) -> pd.DataFrame:
    out = frame[columns + ["source_line"]].copy()
    out.insert(len(columns), "source_file", pd.Series(str(path), index=out.index, dtype="string"))
    out["source_line"] = out["source_line"].astype("int64")
    return out.reset_index(drop=True)


def typed_interactions(path: Path, frame: pd.DataFrame, bad: pd.DataFrame, unit: str = "s") -> Batch:
    """Raw interaction columns (user_id, native_item, timestamp, rating, source_line) to typed
    rows; a timestamp that is not a number quarantines its row."""
    timestamps, ts_bad = to_epoch_seconds(frame["timestamp"], unit)
    if ts_bad.any():
        frame, ts_quarantine = quarantine_unparseable(frame, ts_bad, path, "timestamp is not a number", "timestamp")
        timestamps = timestamps[~ts_bad]
        bad = pd.concat([bad, ts_quarantine], ignore_index=True)
    rating = frame["rating"] if "rating" in frame else pd.Series(np.nan, index=frame.index)
    rows = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("string").to_numpy(),
            "native_item": frame["native_item"].astype("string").to_numpy(),
            "timestamp": timestamps.to_numpy(dtype="int64"),
            "rating": pd.to_numeric(rating, errors="coerce").to_numpy(dtype="float64"),
            "source_line": frame["source_line"].to_numpy(dtype="int64"),
        }
    )
    return Batch(rows, bad)

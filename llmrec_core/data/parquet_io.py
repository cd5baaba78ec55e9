"""Writing and reading the data stages' Parquet files (their schemas are in contract.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class ParquetSink:
    """Append DataFrames to one Parquet file with a fixed schema; always leaves a valid file."""

    def __init__(self, path: Path, schema: pa.Schema):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.schema, self.rows = path, schema, 0
        self._tmp = path.with_suffix(path.suffix + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    def write(self, rows: pd.DataFrame | pa.Table) -> None:
        """Append rows: a DataFrame, or an Arrow table (e.g. a row group of another file of this schema)."""
        if len(rows):
            if isinstance(rows, pa.Table):
                table = rows.select(self.schema.names).cast(self.schema)
            else:
                table = pa.Table.from_pandas(rows[self.schema.names], schema=self.schema, preserve_index=False)
            self._writer.write_table(table)
            self.rows += len(rows)

    def close(self) -> None:
        self._writer.close()
        self._tmp.replace(self.path)  # atomic: a crashed run never leaves a half-written output

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)


def append_file(part: Path, write) -> None:
    """Hand a Parquet file's rows to `write` (e.g. a ParquetSink's), one row group at a time, then remove the file:
    how the Ray engines' drivers merge their workers' part files (memory: one row group)."""
    with pq.ParquetFile(part) as f:
        for g in range(f.num_row_groups):
            write(f.read_row_group(g))
    part.unlink()


def write_table(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    """Write a DataFrame as one zstd Parquet file through a temporary file (a reader never sees half a file)."""
    if schema is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, compression="zstd")
        tmp.replace(path)
        return
    with ParquetSink(path, schema) as sink:
        sink.write(frame)


def read_table(path: Path) -> pd.DataFrame:
    """Read a Parquet file written by this package into a DataFrame."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run the previous pipeline stage first")
    return pq.read_table(path).to_pandas()


def read_chunks(path: Path, rows: int):
    """A Parquet file written by this package as DataFrames of at most `rows` rows (each with a fresh index)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run the previous pipeline stage first")
    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        yield pa.Table.from_batches([batch]).to_pandas()

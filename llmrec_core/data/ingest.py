"""Stage 1: read every configured source and write contract rows (with file/line provenance).

Rows that cannot be parsed are quarantined with file, line and reason; for every file,
records read = rows written + rows quarantined. With `data.engine: ray` each source is read by its own Ray task and
the driver appends their parts in source order (ray_ingest.py): the same files, row for row.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from ..config import Params
from .contract import INTERACTIONS, ITEMS, QUARANTINE
from .layout import DataLayout
from .parquet_io import ParquetSink
from .source_reader import SourceCounts, read_source
from .sources.common import check_input_file
from .stage import stage_output


def ingest(params: Params, progress=None) -> list[SourceCounts]:
    """Read every source, write data/interim (items, interactions, quarantine, ingest_report.json) in one swap."""
    layout = DataLayout(params.data_root)
    sources = [(src, check_input_file(params.resolve(src.items), "items"),
                check_input_file(params.resolve(src.interactions), "interactions")) for src in params.data.sources]
    with stage_output(layout.interim, "llmrec ingest") as out:
        if params.data.engine == "ray":
            from .ray_ingest import ingest_ray

            counts = ingest_ray(out, sources, params, progress)
        else:
            counts = _ingest_into(out, sources, params.data.chunk_rows, progress)
        write_report(out, counts)
        return counts


def _ingest_into(out: Path, sources, chunk: int, progress) -> list[SourceCounts]:
    with (
        ParquetSink(out / "items.parquet", ITEMS) as items_out,
        ParquetSink(out / "interactions.parquet", INTERACTIONS) as inter_out,
        ParquetSink(out / "quarantine.parquet", QUARANTINE) as quarantine,
    ):
        return [read_source(src, items_path, inter_path, chunk, items_out.write, inter_out.write, quarantine.write,
                              progress) for src, items_path, inter_path in sources]


def write_report(out: Path, counts: list[SourceCounts]) -> None:
    """ingest_report.json: each source's counts, and a fresh run_id that ties what validate and prepare read to
    this ingest (prepare refuses data validated from another)."""
    report = {"run_id": uuid.uuid4().hex, "sources": [tally.__dict__ for tally in counts]}
    (out / "ingest_report.json").write_text(json.dumps(report, indent=2))

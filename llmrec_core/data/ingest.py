"""Stage 1: read every configured source and write contract rows (with file/line provenance).

Rows that cannot be parsed are quarantined with file, line and reason; for every file,
records read = rows written + rows quarantined. With `data.engine: ray` each source is read by its own Ray task and
the driver appends their parts in source order (ray_ingest.py): the same files, row for row.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import Params, SourceConfig
from .contract import INTERACTIONS, ITEMS, QUARANTINE, make_item_id
from .layout import DataLayout
from .parquet_io import ParquetSink
from .sources import Batch, read_interactions, read_items
from .sources.common import check_input_file, clean_titles
from .stage import stage_output


@dataclass
class SourceCounts:
    """What ingest read from one source: items and interactions kept and quarantined, per domain."""

    source: str
    items: int = 0
    items_quarantined: int = 0
    interactions: int = 0
    interactions_quarantined: int = 0
    domains: dict[str, int] = field(default_factory=dict)


def _quarantine_rows(bad: pd.DataFrame, table: str) -> pd.DataFrame:
    return bad.assign(stage="ingest", table=table)


def _item_rows(src: SourceConfig, batch: Batch) -> pd.DataFrame:
    rows = batch.rows
    domain = (
        pd.Series(src.domain, index=rows.index, dtype="string")
        if src.domain_from == "fixed"
        else rows["genre"].astype("string")
    )
    native = rows["native_item"].astype("string")
    out = pd.DataFrame(
        {
            "item_id": make_item_id(domain.fillna("?"), native),
            "domain": domain,
            "title": clean_titles(rows["title"]),
            "source_line": rows["source_line"],
        }
    )
    for col in ("brand", "categories", "description"):
        out[col] = rows[col].astype("string") if col in rows else pd.Series(pd.NA, index=rows.index, dtype="string")
    return out


def _interaction_rows(src: SourceConfig, batch: Batch, domain_of: pd.Series | None) -> pd.DataFrame:
    rows = batch.rows
    native = rows["native_item"].astype("string")
    if domain_of is None:
        domain = pd.Series(src.domain, index=rows.index, dtype="string")
    else:  # an unknown item gets no domain; validation reports it as an unknown item
        domain = native.map(domain_of).astype("string")
    return pd.DataFrame(
        {
            "user_id": rows["user_id"],
            "item_id": make_item_id(domain.fillna("?"), native),
            "domain": domain,
            "timestamp": rows["timestamp"],
            "rating": rows["rating"],
            "source_line": rows["source_line"],
        }
    )


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
        return [ingest_source(src, items_path, inter_path, chunk, items_out.write, inter_out.write, quarantine.write,
                              progress) for src, items_path, inter_path in sources]


def ingest_source(src: SourceConfig, items_path: Path, inter_path: Path, chunk: int, items_out, inter_out,
                  quarantine, progress=None) -> SourceCounts:
    """Read one source (its items, then its interactions: `domain_from: first_genre` needs the items' domains) and
    hand its contract rows and quarantined rows to the three writers, chunk by chunk."""
    tally = SourceCounts(src.name)
    domain_maps = []
    for batch in read_items(src, items_path, chunk):
        rows = _item_rows(src, batch).assign(source_file=str(items_path))
        items_out(rows)
        quarantine(_quarantine_rows(batch.bad, "items"))
        tally.items += len(rows)
        tally.items_quarantined += len(batch.bad)
        if src.domain_from == "first_genre":
            domain_maps.append(pd.Series(rows["domain"].to_numpy(), index=batch.rows["native_item"].to_numpy()))
    domain_of = None
    if src.domain_from == "first_genre":
        domain_of = pd.concat(domain_maps) if domain_maps else pd.Series(dtype="string")
        domain_of = domain_of[~domain_of.index.duplicated(keep="first")]
    for batch in read_interactions(src, inter_path, chunk):
        rows = _interaction_rows(src, batch, domain_of).assign(source_file=str(inter_path))
        inter_out(rows)
        quarantine(_quarantine_rows(batch.bad, "interactions"))
        tally.interactions += len(rows)
        tally.interactions_quarantined += len(batch.bad)
        for d, n in rows["domain"].fillna("?").value_counts().items():
            tally.domains[d] = tally.domains.get(d, 0) + int(n)
        if progress:
            progress(src.name, tally.interactions)
    return tally


def write_report(out: Path, counts: list[SourceCounts]) -> None:
    """ingest_report.json: each source's counts, and a fresh run_id that ties what validate and prepare read to
    this ingest (prepare refuses data validated from another)."""
    report = {"run_id": uuid.uuid4().hex, "sources": [tally.__dict__ for tally in counts]}
    (out / "ingest_report.json").write_text(json.dumps(report, indent=2))

"""Reading one source (its items file, then its interactions file) into contract rows and quarantined rows, chunk by
chunk: what `ingest` does for each source, on this machine (ingest.py) or in a Ray task (ray_ingest.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import SourceConfig
from .contract import make_item_id
from .sources import Batch, read_interactions, read_items
from .sources.common import clean_titles


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


def read_source(src: SourceConfig, items_path: Path, inter_path: Path, chunk: int, items_out, inter_out,
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

"""Stage 2: check both tables with great-expectations (1.x) suites and quarantine failing rows.

Each failing row goes to the quarantine file with every expectation it broke; the GX results
of the run are kept as JSON and rendered as GX Data Docs (<results_dir>/<run>/data_docs/index.html). The stage
fails only when the share of bad records (ingest and validation together) passes `validation.max_bad_fraction`.
Interactions are read and checked `data.chunk_rows` at a time, so memory does not grow with their number; items
are checked whole (their ids must be unique). With `data.engine: ray` the interactions' chunks are checked by a pool
of Ray actors (ray_validate.py): the same files, reports and gate; their GX results are in interactions.json but
get no Data Docs page (the items' page is rendered as here), and validated/engine.json holds the engine's timings.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import Params
from ..errors import UserError
from .layout import DataLayout
from .contract import INTERACTIONS, ITEMS, QUARANTINE, interaction_expectations, item_expectations, with_known_item
from .gx_suite import Suite, gx_context, run_suite, split_bad, write_chunk_results
from .parquet_io import ParquetSink, read_chunks, read_table
from .stage import stage_output


class ValidationFailed(UserError, RuntimeError):
    """Too large a share of the input was bad; the quarantine file says which rows and why."""


@dataclass
class TableReport:
    """The outcome of validating one table: rows in and out, rows quarantined (per reason), and the GX verdict."""

    table: str
    rows_in: int
    rows_out: int
    quarantined: int
    reasons: dict[str, int]
    gx_success: bool


def _suites(params: Params) -> dict[str, list]:
    v, domains = params.validation, list(params.data.domains) or None
    max_ts = v.max_timestamp or int(time.time()) + 86_400
    return {"items": item_expectations(v.max_title_chars, domains),
            "interactions": interaction_expectations(v.min_timestamp, max_ts, check_items=True, domains=domains)}


def validate(params: Params, run_id: str | None = None) -> list[TableReport]:
    """Read data/interim, write data/validated (rows that passed, quarantine, report) in one swap; when too many
    records are bad, raise ValidationFailed and leave no data/validated at all (the gate of `prepare`)."""
    layout = DataLayout(params.data_root)
    with stage_output(layout.validated, "llmrec validate", discard_on=(ValidationFailed,)) as out:
        return _validate_into(out, layout, params, run_id)


@dataclass
class Tally:
    """What validation did to one table: rows read, rows quarantined and why, GX's verdict."""

    rows_in: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    gx_success: bool = True

    def add(self, rows: int, bad: pd.DataFrame, gx_success: bool = True) -> None:
        self.count(rows, len(bad), bad["reason"].value_counts().to_dict(), gx_success)

    def count(self, rows: int, quarantined: int, reasons: dict[str, int], gx_success: bool = True) -> None:
        """`add`, from counts (what a worker of the Ray engine returns for its block)."""
        self.rows_in += rows
        self.quarantined += quarantined
        self.reasons.update(reasons)
        self.gx_success &= bool(gx_success)


def _validate_into(out: Path, layout: DataLayout, params: Params, run_id: str | None) -> list[TableReport]:
    ingest_report = layout.interim / "ingest_report.json"
    input_run_id = json.loads(ingest_report.read_text()).get("run_id") if ingest_report.is_file() else None
    run_id = run_id or time.strftime("%Y%m%dT%H%M%S")
    results_dir = params.resolve(params.validation.results_dir) / run_id
    results_dir.mkdir(parents=True, exist_ok=True)
    ctx, suites = gx_context(results_dir / "data_docs"), _suites(params)
    tallies = {"items": Tally(), "interactions": Tally()}
    with (ParquetSink(out / "quarantine.parquet", QUARANTINE) as q_out,
          # the quarantine goes beside the GX results too: it must outlive a failed gate, which keeps no data/validated
          ParquetSink(results_dir / "quarantine.parquet", QUARANTINE) as q_kept):
        def quarantine(bad: pd.DataFrame) -> pd.DataFrame:
            q_out.write(bad)
            q_kept.write(bad)
            return bad

        good_items = _check_items(layout, out, results_dir, suites["items"], ctx, quarantine, tallies["items"])
        if params.data.engine == "ray":  # the same suite and files, the blocks on a Ray cluster's workers
            from .ray_validate import check_interactions_ray

            check_interactions_ray(layout, out, results_dir, suites["interactions"], pd.Index(good_items["item_id"]),
                                   params, quarantine, tallies["interactions"])
        else:
            _check_interactions(layout, out, results_dir, suites["interactions"], ctx,
                                pd.Index(good_items["item_id"]), params.data.chunk_rows, quarantine,
                                tallies["interactions"])
    reports = _reports(tallies, read_table(layout.quarantine("interim")))
    summary = {"run_id": run_id, "input_run_id": input_run_id, "tables": [r.__dict__ for r in reports]}
    (out / "validation_report.json").write_text(json.dumps(summary, indent=2))
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _gate(reports, params.validation.max_bad_fraction, results_dir, layout)
    return reports


def _check_items(layout: DataLayout, out: Path, results_dir: Path, expectations, ctx, quarantine,
                 tally: Tally) -> pd.DataFrame:
    """Items, whole (their ids must be unique): write the good ones, quarantine the rest; returns the good ones."""
    items = read_table(layout.interim / "items.parquet")
    # Exact duplicate item ids: keep the first, quarantine the rest (GX's uniqueness check flags every copy).
    dup = items["item_id"].notna() & items.duplicated("item_id", keep="first")
    dup_reasons = pd.Series("duplicate item_id (first occurrence kept)", index=items.index[dup], dtype="string")
    items_unique = items[~dup].reset_index(drop=True)
    _, duplicates = split_bad(items, dup_reasons, "items")
    result, reasons = run_suite("items", items_unique, expectations, ctx)
    good, bad = split_bad(items_unique, reasons, "items")
    (results_dir / "items.json").write_text(json.dumps(result, indent=1, default=str))
    with ParquetSink(out / "items.parquet", ITEMS) as sink:
        sink.write(good)
    tally.add(len(items), pd.concat([quarantine(duplicates), quarantine(bad)]), result["success"])
    return good


def _check_interactions(layout: DataLayout, out: Path, results_dir: Path, expectations, ctx, known: pd.Index,
                        chunk_rows: int, quarantine, tally: Tally) -> None:
    """Interactions, `chunk_rows` at a time through one GX suite: write the good ones, quarantine the rest."""
    suite, chunks = Suite("interactions", expectations, ctx), []
    with ParquetSink(out / "interactions.parquet", INTERACTIONS) as sink:
        for chunk in read_chunks(layout.interim / "interactions.parquet", chunk_rows):
            result, reasons = suite.run(with_known_item(chunk, known))
            good, bad = split_bad(chunk, reasons, "interactions")
            sink.write(good)
            chunks.append({"first_row": tally.rows_in, "rows": len(chunk), "result": result})
            tally.add(len(chunk), quarantine(bad), result["success"])
    write_chunk_results(results_dir, tally.gx_success, tally.rows_in, chunks)


def _reports(tallies: dict[str, Tally], ingest_bad: pd.DataFrame) -> list[TableReport]:
    """Per table: records in and kept, and the reasons of ingest's and validation's quarantine together."""
    reports = []
    for table, tally in tallies.items():
        prior = ingest_bad[ingest_bad["table"] == table]
        why = Counter()
        for reason, n in (Counter(prior["reason"]) + tally.reasons).items():
            why[re.sub(r": .*$", "", str(reason))] += int(n)  # "bad timestamp: 'x'" counts as "bad timestamp"
        reports.append(TableReport(table, tally.rows_in + len(prior), tally.rows_in - tally.quarantined,
                                   len(prior) + tally.quarantined, dict(why.most_common()),
                                   tally.gx_success and not len(prior)))
    return reports


def _gate(reports: list[TableReport], limit: float, results_dir: Path, layout: DataLayout) -> None:
    """Fail the stage when a table's share of bad records passes `validation.max_bad_fraction`."""
    for r in reports:
        if r.rows_in and r.quarantined / r.rows_in > limit:
            top = max(r.reasons, key=r.reasons.get) if r.reasons else ""
            hint = ("; most are unknown items: do the interactions' item ids match the items file's (zero padding, "
                    "prefixes, a different id column)?" if top.startswith("unknown item") else
                    f"; most common reason: {top}" if top else "")
            raise ValidationFailed(
                f"{r.table}: {r.quarantined} of {r.rows_in} records are bad "
                f"({r.quarantined / r.rows_in:.1%} > validation.max_bad_fraction={limit:.1%}){hint}; no validated "
                f"data was written; see {results_dir / 'quarantine.parquet'} and {layout.quarantine('interim')}"
            )

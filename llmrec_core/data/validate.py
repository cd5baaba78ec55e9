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

import numpy as np
import pandas as pd

from ..config import Params
from ..errors import UserError
from .layout import DataLayout
from .contract import INTERACTIONS, ITEMS, KNOWN_ITEM, QUARANTINE, interaction_expectations, item_expectations, \
    with_known_item
from .parquet_io import ParquetSink, read_chunks, read_table
from .stage import stage_output

DOCS_SITE = "llmrec"


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


def _describe(expectation_type: str, kwargs: dict) -> str:
    column = kwargs.get("column", "")
    return {
        "expect_column_values_to_not_be_null": f"{column} is missing",
        "expect_column_values_to_be_in_set": (
            "unknown item (not in items)" if column == KNOWN_ITEM else f"{column} not in configured set"
        ),
        "expect_column_value_lengths_to_be_between": (
            f"{column} length outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
        ),
        "expect_column_values_to_be_between": (
            f"{column} outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
        ),
        "expect_column_values_to_be_unique": f"{column} not unique",
        "expect_column_values_to_not_match_regex": f"{column} holds a control character (a line break, NUL, ...)",
    }.get(expectation_type, f"{expectation_type} on {column}")


def _suites(params: Params) -> dict[str, list]:
    v, domains = params.validation, list(params.data.domains) or None
    max_ts = v.max_timestamp or int(time.time()) + 86_400
    return {"items": item_expectations(v.max_title_chars, domains),
            "interactions": interaction_expectations(v.min_timestamp, max_ts, check_items=True, domains=domains)}


def gx_context(docs_dir: Path | None = None):
    """An in-memory GX context; with `docs_dir`, validations also render GX Data Docs (static HTML) there."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(site_name=DOCS_SITE, site_config={
            "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)}})
    return ctx


class Suite:
    """One GX suite, set up once in a context and run on any number of DataFrames (e.g. chunks of one table)."""

    def __init__(self, name: str, expectations, ctx=None):
        import great_expectations as gx

        ctx = ctx or gx_context()
        self.name = name
        batch_def = (ctx.data_sources.add_pandas(f"llmrec-{name}").add_dataframe_asset(name)
                     .add_batch_definition_whole_dataframe("all"))
        suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=list(expectations)))
        definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_def, suite=suite))
        docs = [gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=[DOCS_SITE])] \
            if DOCS_SITE in (ctx.get_site_names() or []) else []
        self.checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name=name, validation_definitions=[definition], actions=docs, result_format={"result_format": "COMPLETE"}))

    def run(self, frame: pd.DataFrame) -> tuple[dict, pd.Series]:
        """(GX result as JSON dict, reason string per failing row index of `frame`)."""
        result = next(iter(self.checkpoint.run(batch_parameters={"dataframe": frame}).run_results.values()))
        reasons: dict[int, list[str]] = {}
        for r in result.results:
            if r.success:
                continue
            if r.exception_info and r.exception_info.get("raised_exception"):
                raise RuntimeError(f"great-expectations failed on {self.name}: "
                                   f"{r.exception_info.get('exception_message')}")
            why = _describe(r.expectation_config.type, r.expectation_config.kwargs)
            for idx in r.result.get("unexpected_index_list") or []:
                reasons.setdefault(int(idx), []).append(why)
        per_row = pd.Series({i: "; ".join(rs) for i, rs in reasons.items()}, dtype="string")
        summary = result.to_json_dict()
        for r in summary.get("results", []):  # full index lists can be huge; the quarantine file has them
            res = r.get("result") or {}
            for key in ("unexpected_index_list", "unexpected_list", "unexpected_index_query"):
                if key in res:
                    res[key] = res[key][:20] if isinstance(res[key], list) else res[key]
        return summary, per_row


def run_suite(name: str, frame: pd.DataFrame, expectations, ctx=None) -> tuple[dict, pd.Series]:
    """Run one suite once; returns (GX result as JSON dict, reason string per failing row index)."""
    return Suite(name, expectations, ctx).run(frame)


def _record_text(rows: pd.DataFrame) -> np.ndarray:
    if not len(rows):
        return np.array([], dtype=object)
    fields = rows.drop(columns=["source_file", "source_line"]).astype("string").fillna("")
    return fields.agg(" | ".join, axis=1).to_numpy()


def _split_bad(frame: pd.DataFrame, reasons: pd.Series, table: str):
    mask = np.zeros(len(frame), dtype=bool)
    mask[reasons.index.to_numpy(dtype=np.int64)] = True
    bad = frame[mask]
    quarantined = pd.DataFrame(
        {
            "stage": "validate",
            "table": table,
            "source_file": bad["source_file"].to_numpy(),
            "source_line": bad["source_line"].to_numpy(),
            "reason": reasons.reindex(bad.index).to_numpy(),
            "record": _record_text(bad),
        }
    )
    return frame[~mask].reset_index(drop=True), quarantined


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
    _, duplicates = _split_bad(items, dup_reasons, "items")
    result, reasons = run_suite("items", items_unique, expectations, ctx)
    good, bad = _split_bad(items_unique, reasons, "items")
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
            good, bad = _split_bad(chunk, reasons, "interactions")
            sink.write(good)
            chunks.append({"first_row": tally.rows_in, "rows": len(chunk), "result": result})
            tally.add(len(chunk), quarantine(bad), result["success"])
    write_chunk_results(results_dir, tally, chunks)


def write_chunk_results(results_dir: Path, tally: Tally, chunks: list[dict]) -> None:
    """interactions.json: GX's verdict and each chunk's first row, rows and GX result."""
    (results_dir / "interactions.json").write_text(json.dumps(
        {"success": tally.gx_success, "rows": tally.rows_in, "chunks": chunks}, indent=1, default=str))


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

"""great-expectations (1.x) for the data stages: a context (optionally rendering Data Docs), a suite set up once
and run on any number of DataFrames (each failing row with the reasons it broke), the split of a frame into its good
rows and its quarantine rows, and the interactions' per-chunk results file. validate.py runs them on the driver,
ray_validate.py on Ray's workers, serve/new_items.py on items arriving between trainings.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .contract import KNOWN_ITEM

DOCS_SITE = "llmrec"


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


def record_text(rows: pd.DataFrame) -> np.ndarray:
    """Each row's fields but its provenance, as text joined by " | " (a quarantine row's `record`)."""
    if not len(rows):
        return np.array([], dtype=object)
    fields = rows.drop(columns=["source_file", "source_line"]).astype("string").fillna("")
    return fields.agg(" | ".join, axis=1).to_numpy()


def split_bad(frame: pd.DataFrame, reasons: pd.Series, table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows of `frame` with no reason, the others as quarantine rows of validation: file, line, reason and
    the record's text)."""
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
            "record": record_text(bad),
        }
    )
    return frame[~mask].reset_index(drop=True), quarantined


def write_chunk_results(results_dir: Path, success: bool, rows: int, chunks: list[dict]) -> None:
    """interactions.json: GX's verdict and each chunk's first row, rows and GX result."""
    (results_dir / "interactions.json").write_text(json.dumps(
        {"success": success, "rows": rows, "chunks": chunks}, indent=1, default=str))

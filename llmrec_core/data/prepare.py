"""Stage 3: clean, filter and split the validated data into the three data settings; the README describes them.

Outputs under `<data.root>/prepared/`:
- `items.parquet`        item_idx, item_id, domain, title, train_count, group (cold/tail/head)
- `users.parquet`        user_idx, user_id
- `events.parquet`       every kept event in time order with its split (train/valid/test)
- `sequences_mixed.parquet`      per user: training history across all domains (Mixed)
- `sequences_in_domain.parquet`  per user and domain: in-domain training history (Single Domain, S2PIAO)
- `eval_mixed.parquet` / `eval_in_domain.parquet`  valid/test targets with the history each setting sees
- `dropped.parquet`      every event removed here, with the reason (duplicates, k-core, ...)
- `manifest.json`        counts per domain and per setting (manifest.py)
- `partitions/<table>/part-<p>.parquet`  with `data.engine: ray`: the rows of events, sequences_* and eval_* of
  user partition p (users partitioned by a hash of their id); the single files hold the same rows (ray_prepare.py)

Every setting uses the same valid/test targets (leave-one-out on the mixed history), so numbers
are comparable across settings and models. prepared_tables.py writes the catalogue, the split and the user tables,
for this module and for ray_prepare.py.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Params
from .event_filter import KeptEvents, PreparationError, engine, filter_events
from .layout import DataLayout
from .manifest import build_manifest
from .parquet_io import read_table
from .prepared_tables import (PARTITIONS, IndexedEvents, catalogue, leave_one_out, missing_items, setting_files,
                              with_groups, write_catalogue, write_settings)
from .stage import stage_output
from .time_split import with_time_split


ENGINE_PREFIX = ".prepare-engine-"  # + the pid of the prepare using it


def remove_dead_engines(root: Path) -> None:
    """Remove the scratch databases (which can be large) that prepares killed mid-run left: those whose pid no
    longer runs."""
    for folder in root.glob(f"{ENGINE_PREFIX}*"):
        pid = folder.name.removeprefix(ENGINE_PREFIX)
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def read_validated(layout: DataLayout) -> pd.DataFrame:
    """The items that passed validation, refusing outputs of a failed, unfinished or outdated validation (the
    interactions are read out of core by `filter_events`)."""
    report_path = layout.validated / "validation_report.json"
    if not report_path.is_file():
        raise PreparationError(f"{layout.validated}: no validated data (a failed or unfinished `llmrec validate` "
                               f"leaves none); run `llmrec validate` first")
    report = json.loads(report_path.read_text())
    ingest_report = layout.interim / "ingest_report.json"
    if ingest_report.is_file():
        current = json.loads(ingest_report.read_text()).get("run_id")
        if current and report.get("input_run_id") != current:
            raise PreparationError(f"{layout.validated} was validated from an earlier ingest than {layout.interim} "
                                   f"holds now; run `llmrec validate` first")
    items = read_table(layout.validated / "items.parquet")
    n_events = pq.ParquetFile(layout.validated / "interactions.parquet").metadata.num_rows
    for name, rows in (("items", len(items)), ("interactions", n_events)):
        if not rows:
            raise PreparationError(f"{layout.validated / (name + '.parquet')}: no {name} passed validation; "
                                   f"nothing to prepare")
    return items


def prepare(params: Params) -> dict:
    """Read data/validated, write data/prepared (items, users, events, data settings, manifest.json) in one swap."""
    layout = DataLayout(params.data_root)
    items = read_validated(layout)
    interactions = layout.validated / "interactions.parquet"
    with stage_output(layout.prepared, "llmrec prepare") as out:
        remove_dead_engines(layout.root)
        scratch = layout.root / f"{ENGINE_PREFIX}{os.getpid()}"
        if params.data.engine == "ray":  # the events never leave the user partitions: ray_prepare.py
            from .ray_prepare import prepare_on_ray

            manifest = prepare_on_ray(interactions, items, params, out, scratch)
        else:
            with engine(scratch, params.data.memory_limit_mb) as con:
                kept = filter_events(con, interactions, params, out / "dropped.parquet")
            rows_in, dropped = kept.rows_in, kept.dropped
            catalog, user_ids, indexed = index_events(items, kept, params.prepare)
            del kept  # its arrays are copied into `indexed`; at tens of millions of events the copy is large
            write_catalogue(out, catalog, user_ids)
            counts = write_settings(setting_files(out), indexed, params.prepare.max_history)
            manifest = build_manifest(counts, catalog, indexed.domains, rows_in, dropped, params)
        if params.prepare.time_split is not None:  # the new-item setting: a split by time instead of leave-one-out
            # It rewrites the single files in memory, on Ray too; Ray's partitioned leave-one-out files would disagree.
            shutil.rmtree(out / PARTITIONS, ignore_errors=True)
            manifest = with_time_split(out, manifest, params.prepare)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return manifest


def index_events(items: pd.DataFrame, kept: KeptEvents, cfg) -> tuple[pd.DataFrame, pa.Array, IndexedEvents]:
    """The catalogue (items sorted by (domain, item_id), with their groups), the user ids by user_idx and the
    events indexed and split."""
    present = kept.item_ids[np.bincount(kept.item, minlength=len(kept.item_ids)) > 0]
    catalog = catalogue(items, present, kept.domains, cfg.title_max_chars)
    item_idx = pd.Index(catalog["item_id"]).get_indexer(kept.item_ids).astype(np.int32)[kept.item]
    if (item_idx < 0).any():
        raise missing_items(int((item_idx < 0).sum()))
    new_user = np.concatenate([[len(kept.user) > 0], kept.user[1:] != kept.user[:-1]])
    user_idx = (np.cumsum(new_user) - 1).astype(np.int32)  # events are user-sorted: ids follow
    ev = leave_one_out(user_idx, item_idx, kept.domain.astype(np.int16), kept.timestamp, kept.domains)
    with_groups(catalog, np.bincount(item_idx[ev.split_code == 0], minlength=len(catalog)), cfg.tail_fraction)
    ev.groups = catalog["group"].to_numpy()
    return catalog, kept.user_ids.take(pa.array(kept.user[ev.starts])), ev



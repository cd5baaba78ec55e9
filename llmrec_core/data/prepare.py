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
are comparable across settings and models.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Params
from .event_filter import LSTR, KeptEvents, PreparationError, engine, filter_events
from .layout import DataLayout
from .manifest import build_manifest, manifest_counts
from .parquet_io import read_table
from .stage import stage_output
from .sequences import gather_ranges, group_starts
from .splits import SPLITS, item_groups, write_sequences
from .time_split import with_time_split


ENGINE_PREFIX = ".prepare-engine-"  # + the pid of the prepare using it
USER_TABLES = ["events", "sequences_mixed", "sequences_in_domain", "eval_mixed", "eval_in_domain"]  # rows by user
PARTITIONS = "partitions"  # Ray's user-partitioned datasets of USER_TABLES, under prepared/


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


@dataclass
class IndexedEvents:
    """Kept events as integer arrays, user-major and time-ordered: every user's, or one Ray partition's."""

    domains: list[str]
    user_idx: np.ndarray
    item_idx: np.ndarray
    domain_code: np.ndarray
    timestamp: np.ndarray
    split_code: np.ndarray  # 0 train, 1 valid, 2 test (leave-one-out on each user's mixed history)
    starts: np.ndarray  # each user's first event
    lengths: np.ndarray  # and number of events
    groups: np.ndarray | None = None  # per item_idx: cold, tail or head (from every user's training counts)


def catalogue(items: pd.DataFrame, present: np.ndarray, domains: list[str], title_max_chars: int) -> pd.DataFrame:
    """The items with kept events (ids `present`), sorted by (domain, item_id) so each domain is a contiguous
    item_idx range."""
    catalog = items[items["item_id"].isin(present)].copy()
    catalog["domain"] = pd.Categorical(catalog["domain"], categories=domains)
    catalog = catalog.sort_values(["domain", "item_id"]).reset_index(drop=True)
    catalog["domain"] = catalog["domain"].astype("string")
    catalog["item_idx"] = np.arange(len(catalog), dtype=np.int32)
    catalog["title"] = catalog["title"].str.slice(0, title_max_chars)
    return catalog


def missing_items(events: int) -> PreparationError:
    """The error for events whose item is not in the catalogue (item_idx -1)."""
    return PreparationError(f"{events} events name an item missing from the validated items; run `llmrec validate` "
                            "again")


def leave_one_out(user_idx: np.ndarray, item_idx: np.ndarray, domain_code: np.ndarray, timestamp: np.ndarray,
                  domains: list[str]) -> IndexedEvents:
    """The split: each user's last event is its test target, the one before its validation target."""
    starts, lengths = group_starts(user_idx)
    from_end = np.repeat(starts + lengths - 1, lengths) - np.arange(len(user_idx))
    split_code = (2 - np.minimum(from_end, 2)).astype(np.int8)  # 0 train, 1 valid, 2 test
    return IndexedEvents(domains, user_idx, item_idx, domain_code, timestamp, split_code, starts, lengths)


def with_groups(catalog: pd.DataFrame, train_count: np.ndarray, tail_fraction: float) -> None:
    """The catalogue's training counts (over every user) and the item groups they make."""
    catalog["train_count"] = train_count.astype(np.int64)
    catalog["group"] = item_groups(train_count, tail_fraction)


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


def _labels(codes: np.ndarray, names) -> pa.Array:
    """Text column from small integer codes, without a Python string per row."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(names), LSTR)).cast(LSTR)


def write_catalogue(out: Path, catalog: pd.DataFrame, user_ids: pa.Array) -> None:
    """items.parquet and users.parquet (user ids by user_idx)."""
    pq.write_table(pa.Table.from_pandas(catalog[["item_idx", "item_id", "domain", "title", "train_count", "group"]],
                                        preserve_index=False), out / "items.parquet", compression="zstd")
    pq.write_table(pa.table({"user_idx": np.arange(len(user_ids), dtype=np.int32), "user_id": user_ids.cast(LSTR)}),
                   out / "users.parquet", compression="zstd")


def setting_files(folder: Path) -> dict[str, Path]:
    """The user tables' single files in `folder` (the local path's; Ray's once merged)."""
    return {name: folder / f"{name}.parquet" for name in USER_TABLES}


def write_settings(files: dict[str, Path], ev: IndexedEvents, max_history: int) -> dict:
    """The user tables of these users' events (the events with their split, and the data settings); returns the
    manifest's counts over them. dropped.parquet is written while filtering."""
    pq.write_table(pa.table({"user_idx": ev.user_idx, "item_idx": ev.item_idx, "domain": _labels(ev.domain_code, ev.domains),
                             "timestamp": ev.timestamp, "split": _labels(ev.split_code, SPLITS)}),
                   files["events"], compression="zstd")
    write_mixed(files, ev, max_history)
    write_in_domain(files, ev, max_history)
    return manifest_counts(ev, files)


def write_mixed(files: dict[str, Path], ev: IndexedEvents, max_history: int) -> None:
    """Mixed: one time-ordered history across all domains; its training sequences and valid/test rows."""
    train_len = ev.lengths - 2
    write_sequences(files["sequences_mixed"], {"user_idx": ev.user_idx[ev.starts]},
                    gather_ranges(ev.item_idx, ev.starts, train_len))
    target_pos = np.concatenate([ev.starts + ev.lengths - 2, ev.starts + ev.lengths - 1])
    full_hist = np.concatenate([train_len, train_len + 1])
    _write_eval(files["eval_mixed"], ev.item_idx, ev.user_idx, ev.domain_code, ev.domains, ev.groups, target_pos,
                full_hist, max_history, n_users=len(ev.starts))


def write_in_domain(files: dict[str, Path], ev: IndexedEvents, max_history: int) -> None:
    """In-domain: each user's sub-sequence per domain (Single Domain and S2PIAO), and the same targets."""
    domains, domain_names = ev.domains, np.asarray(ev.domains, dtype=object)
    by_domain = np.lexsort((ev.domain_code, ev.user_idx))  # stable: time order within (user, domain)
    d_users, d_codes = ev.user_idx[by_domain], ev.domain_code[by_domain]
    key = d_users.astype(np.int64) * len(domains) + d_codes
    d_items, d_split = ev.item_idx[by_domain], ev.split_code[by_domain]
    del by_domain
    train_sorted = d_split == 0
    t_key = key[train_sorted]
    t_starts, t_lengths = group_starts(t_key)
    write_sequences(
        files["sequences_in_domain"],
        {"user_idx": (t_key[t_starts] // len(domains)).astype(np.int32),
         "domain": domain_names[(t_key[t_starts] % len(domains)).astype(int)]},
        gather_ranges(d_items[train_sorted], t_starts, t_lengths),
    )
    del t_key, t_starts, t_lengths, train_sorted
    targets_sorted = np.flatnonzero(d_split > 0)
    # Order in-domain eval rows like eval_mixed (valid targets of all users, then test targets).
    targets_sorted = targets_sorted[np.lexsort((d_users[targets_sorted], d_split[targets_sorted]))]
    # a target's in-domain history: the events before it in its (user, domain) group
    group_start = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    rank = targets_sorted - group_start[np.searchsorted(group_start, targets_sorted, side="right") - 1]
    _write_eval(files["eval_in_domain"], d_items, d_users, d_codes, domains, ev.groups, targets_sorted, rank,
                max_history, n_users=None, split=d_split[targets_sorted])


def _write_eval(path: Path, items: np.ndarray, users: np.ndarray, domain_codes: np.ndarray, domains: list[str],
                groups: np.ndarray, target_pos: np.ndarray, history_len: np.ndarray, max_history: int,
                n_users: int | None, split: np.ndarray | None = None) -> None:
    """One row per target: the target, its domain and group, and the (capped) history before it."""
    shown = np.minimum(history_len, max_history)
    if split is None:  # targets given as [valid of every user, test of every user]
        split = np.repeat([1, 2], n_users)
    targets = items[target_pos]
    table = pa.table({
        "user_idx": pa.array(users[target_pos].astype(np.int32)),
        "split": pa.array(SPLITS[split]),
        "target": pa.array(targets.astype(np.int32)),
        "domain": pa.array(np.asarray(domains, dtype=object)[domain_codes[target_pos]].astype(str)),
        "group": pa.array(groups[targets].astype(str)),
        "history_len": pa.array(history_len.astype(np.int32)),
        "history": gather_ranges(items, target_pos - shown, shown),
    })
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)

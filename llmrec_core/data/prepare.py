"""Stage 3: clean, filter and split the validated data into the three data settings; the README describes them.

Outputs under `<data.root>/prepared/`:
- `items.parquet`        item_idx, item_id, domain, title, train_count, group (cold/tail/head)
- `users.parquet`        user_idx, user_id
- `events.parquet`       every kept event in time order with its split (train/valid/test)
- `sequences_mixed.parquet`      per user: training history across all domains (Mixed)
- `sequences_in_domain.parquet`  per user and domain: in-domain training history (Single Domain, S2PIAO)
- `eval_mixed.parquet` / `eval_in_domain.parquet`  valid/test targets with the history each setting sees
- `dropped.parquet`      every event removed here, with the reason (duplicates, k-core, ...)
- `manifest.json`        counts per domain and per setting

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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Params
from .event_filter import LSTR, KeptEvents, PreparationError, engine, filter_events
from .layout import DataLayout
from .parquet_io import read_table
from .stage import stage_output
from .sequences import gather_ranges, group_starts
from .splits import SPLITS, item_groups, write_sequences
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
    with stage_output(layout.prepared, "llmrec prepare") as out:
        remove_dead_engines(layout.root)
        scratch = layout.root / f"{ENGINE_PREFIX}{os.getpid()}"
        if params.data.engine == "ray":
            from .ray_filter import filter_events_ray

            kept = filter_events_ray(layout.validated / "interactions.parquet", params, out / "dropped.parquet",
                                     scratch)
        else:
            with engine(scratch, params.data.memory_limit_mb) as con:
                kept = filter_events(con, layout.validated / "interactions.parquet", params, out / "dropped.parquet")
        indexed = index_events(items, kept, params.prepare)
        del kept  # its arrays are copied into `indexed`; at tens of millions of events the copy is large
        return _prepare_into(out, indexed, params)


def _prepare_into(out: Path, indexed: IndexedEvents, params: Params) -> dict:
    write_tables(out, indexed)
    write_mixed(out, indexed, params.prepare.max_history)
    write_in_domain(out, indexed, params.prepare.max_history)
    manifest = build_manifest(out, indexed, params)
    if params.prepare.time_split is not None:  # the new-item setting: a split by time instead of leave-one-out
        manifest = with_time_split(out, manifest, params.prepare)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


@dataclass
class IndexedEvents:
    """The kept events as integer arrays (user-major, time-ordered) and the catalogue they index."""

    catalog: pd.DataFrame  # item_idx, item_id, domain, title, train_count, group; domains are contiguous ranges
    domains: list[str]
    user_ids: pa.Array  # per user_idx
    user_idx: np.ndarray
    item_idx: np.ndarray
    domain_code: np.ndarray
    timestamp: np.ndarray
    split_code: np.ndarray  # 0 train, 1 valid, 2 test (leave-one-out on each user's mixed history)
    starts: np.ndarray  # each user's first event
    lengths: np.ndarray  # and number of events
    rows_in: int
    dropped: dict[str, int]


def index_events(items: pd.DataFrame, kept: KeptEvents, cfg) -> IndexedEvents:
    """Items sorted by (domain, item_id), so each domain is a contiguous id range; the leave-one-out split;
    item groups from the training counts."""
    present = kept.item_ids[np.bincount(kept.item, minlength=len(kept.item_ids)) > 0]
    catalog = items[items["item_id"].isin(present)].copy()
    catalog["domain"] = pd.Categorical(catalog["domain"], categories=kept.domains)
    catalog = catalog.sort_values(["domain", "item_id"]).reset_index(drop=True)
    catalog["domain"] = catalog["domain"].astype("string")
    catalog["item_idx"] = np.arange(len(catalog), dtype=np.int32)
    catalog["title"] = catalog["title"].str.slice(0, cfg.title_max_chars)
    item_idx = pd.Index(catalog["item_id"]).get_indexer(kept.item_ids).astype(np.int32)[kept.item]
    if (item_idx < 0).any():
        raise PreparationError(f"{int((item_idx < 0).sum())} events name an item missing from the validated "
                               "items; run `llmrec validate` again")
    new_user = np.concatenate([[len(kept.user) > 0], kept.user[1:] != kept.user[:-1]])
    user_idx = (np.cumsum(new_user) - 1).astype(np.int32)  # events are user-sorted: ids follow

    starts, lengths = group_starts(user_idx)
    from_end = np.repeat(starts + lengths - 1, lengths) - np.arange(len(user_idx))
    split_code = (2 - np.minimum(from_end, 2)).astype(np.int8)  # 0 train, 1 valid, 2 test
    train_count = np.bincount(item_idx[split_code == 0], minlength=len(catalog))
    catalog["train_count"] = train_count.astype(np.int64)
    catalog["group"] = item_groups(train_count, cfg.tail_fraction)
    user_ids = kept.user_ids.take(pa.array(kept.user[starts]))
    return IndexedEvents(catalog, kept.domains, user_ids, user_idx, item_idx, kept.domain.astype(np.int16),
                         kept.timestamp, split_code, starts, lengths, kept.rows_in, kept.dropped)


def _labels(codes: np.ndarray, names) -> pa.Array:
    """Text column from small integer codes, without a Python string per row."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(names), LSTR)).cast(LSTR)


def write_tables(out: Path, ev: IndexedEvents) -> None:
    """items, users and events (with their split); dropped.parquet is written while filtering."""
    pq.write_table(pa.Table.from_pandas(ev.catalog[["item_idx", "item_id", "domain", "title", "train_count", "group"]],
                                        preserve_index=False), out / "items.parquet", compression="zstd")
    pq.write_table(pa.table({"user_idx": np.arange(len(ev.starts), dtype=np.int32), "user_id": ev.user_ids.cast(LSTR)}),
                   out / "users.parquet", compression="zstd")
    pq.write_table(pa.table({"user_idx": ev.user_idx, "item_idx": ev.item_idx, "domain": _labels(ev.domain_code, ev.domains),
                             "timestamp": ev.timestamp, "split": _labels(ev.split_code, SPLITS)}),
                   out / "events.parquet", compression="zstd")


def write_mixed(out: Path, ev: IndexedEvents, max_history: int) -> None:
    """Mixed: one time-ordered history across all domains; its training sequences and valid/test rows."""
    train_len = ev.lengths - 2
    write_sequences(out / "sequences_mixed.parquet", {"user_idx": np.arange(len(ev.starts), dtype=np.int32)},
                    gather_ranges(ev.item_idx, ev.starts, train_len))
    target_pos = np.concatenate([ev.starts + ev.lengths - 2, ev.starts + ev.lengths - 1])
    full_hist = np.concatenate([train_len, train_len + 1])
    _write_eval(out / "eval_mixed.parquet", ev.item_idx, ev.user_idx, ev.domain_code, ev.domains,
                ev.catalog["group"].to_numpy(), target_pos, full_hist, max_history, n_users=len(ev.starts))


def write_in_domain(out: Path, ev: IndexedEvents, max_history: int) -> None:
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
        out / "sequences_in_domain.parquet",
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
    _write_eval(out / "eval_in_domain.parquet", d_items, d_users, d_codes, domains, ev.catalog["group"].to_numpy(),
                targets_sorted, rank, max_history, n_users=None, split=d_split[targets_sorted])


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


def _pairs(lengths: np.ndarray) -> int:
    """Training examples from sequences: every prefix of length >= 1 predicts the next item."""
    return int(np.clip(np.asarray(lengths, dtype=np.int64) - 1, 0, None).sum())


def _list_lengths(path: Path, columns: list[str]) -> pd.DataFrame:
    table = pq.read_table(path, columns=[*columns, "items"])
    return pd.DataFrame({**{c: table.column(c).to_pandas() for c in columns},
                         "length": pc.list_value_length(table.column("items")).to_numpy()})


def build_manifest(out: Path, ev: IndexedEvents, params: Params) -> dict:
    """Counts of the prepared data (users, items, interactions, drops by reason, per domain and per data setting)
    and the prepare params."""
    domains, nd = ev.domains, len(ev.domains)
    n_users = len(ev.starts)
    mixed_len = ev.lengths - 2  # write_mixed's training sequences
    in_domain = _list_lengths(out / "sequences_in_domain.parquet", ["domain"])
    ev_mixed = pq.read_table(out / "eval_mixed.parquet", columns=["split", "domain", "group", "history_len"]).to_pandas()
    ev_dom = pq.read_table(out / "eval_in_domain.parquet", columns=["split", "domain", "history_len"]).to_pandas()
    dom_len = in_domain["length"].to_numpy()
    test_m, test_d = ev_mixed[ev_mixed["split"] == "test"], ev_dom[ev_dom["split"] == "test"]

    # events per (user, domain): all of them, and the training ones
    pair = ev.user_idx.astype(np.int64) * nd + ev.domain_code
    users_per_domain = (np.bincount(pair, minlength=n_users * nd).reshape(n_users, nd) > 0).sum(axis=0)
    events_per_domain = np.bincount(ev.domain_code, minlength=nd)
    train_by_user_domain = np.bincount(pair[ev.split_code == 0], minlength=n_users * nd).reshape(n_users, nd)
    del pair
    train_by_user = train_by_user_domain.sum(axis=1)
    items_per_domain = ev.catalog["domain"].value_counts()

    per_domain = {}
    for k, d in enumerate(domains):
        per_domain[d] = {
            "users": int(users_per_domain[k]),
            "items": int(items_per_domain.get(d, 0)),
            "interactions": int(events_per_domain[k]),
            "test_targets": int((test_m["domain"] == d).sum()),
            "test_groups": {g: int(n) for g, n in test_m[test_m["domain"] == d]["group"].value_counts().items()},
        }

    # Leave-one-domain-out: train on the other domains' events, test on the held-out domain.
    lodo = {d: {"train_examples": _pairs(train_by_user - train_by_user_domain[:, k]),
                "test_targets": int((test_m["domain"] == d).sum())} for k, d in enumerate(domains)}

    settings = {
        "mixed": {"models": 1, "train_sequences": int((mixed_len >= 2).sum()), "train_examples": _pairs(mixed_len),
                  "test_targets": len(test_m), "test_without_history": int((test_m["history_len"] == 0).sum())},
        "s2piao": {"models": 1, "train_sequences": int((dom_len >= 2).sum()), "train_examples": _pairs(dom_len),
                   "test_targets": len(test_d), "test_without_history": int((test_d["history_len"] == 0).sum())},
        "single_domain": {
            d: {"train_sequences": int(((dom_len >= 2) & (in_domain["domain"] == d)).sum()),
                "train_examples": _pairs(dom_len[(in_domain["domain"] == d).to_numpy()]),
                "test_targets": int((test_d["domain"] == d).sum()),
                "test_without_history": int(((test_d["domain"] == d) & (test_d["history_len"] == 0)).sum())}
            for d in domains
        },
        "leave_one_domain_out": lodo,
    }
    return {
        "interactions_in": ev.rows_in,
        "interactions_kept": int(len(ev.user_idx)),
        "dropped": ev.dropped,
        "users": n_users,
        "items": int(len(ev.catalog)),
        "domains": per_domain,
        "settings": settings,
        "params": json.loads(params.prepare.model_dump_json(exclude_none=True)),  # an option left off is not listed
    }

"""What `prepare` writes from its kept events, on one machine (prepare.py) or per Ray user partition
(ray_prepare.py): the catalogue (items.parquet, users.parquet), the leave-one-out split and the user tables (events
and the data settings' sequences and evaluation rows)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .event_filter import LSTR, PreparationError
from .manifest import manifest_counts
from .sequences import gather_ranges, group_starts
from .splits import SPLITS, item_groups, write_sequences

USER_TABLES = ["events", "sequences_mixed", "sequences_in_domain", "eval_mixed", "eval_in_domain"]  # rows by user
PARTITIONS = "partitions"  # Ray's user-partitioned datasets of USER_TABLES, under prepared/



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
    split_code = np.zeros(len(user_idx), dtype=np.int8)  # 0 train, 1 valid, 2 test
    last = starts + lengths - 1
    split_code[last[lengths > 1] - 1] = 1
    split_code[last] = 2
    return IndexedEvents(domains, user_idx, item_idx, domain_code, timestamp, split_code, starts, lengths)


def with_groups(catalog: pd.DataFrame, train_count: np.ndarray, tail_fraction: float) -> None:
    """The catalogue's training counts (over every user) and the item groups they make."""
    catalog["train_count"] = train_count.astype(np.int64)
    catalog["group"] = item_groups(train_count, tail_fraction)


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

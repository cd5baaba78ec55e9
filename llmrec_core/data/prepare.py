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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Params
from ..errors import UserError
from .layout import DataLayout
from .parquet_io import read_table, write_table
from .stage import stage_output
from .sequences import gather_ranges, group_starts, rank_within_groups
from .splits import SPLITS, item_groups, write_sequences
from .time_split import with_time_split

class PreparationError(UserError, ValueError):
    """The data cannot be prepared as configured (for example a domain left empty)."""


def _drop(frame: pd.DataFrame, mask: np.ndarray, reason: str, dropped: list[pd.DataFrame]) -> pd.DataFrame:
    if mask.any():
        dropped.append(frame.loc[mask, ["user_id", "item_id", "domain", "timestamp", "source_file", "source_line"]]
                       .assign(reason=reason))
    return frame.loc[~mask]


def select_domains(inter: pd.DataFrame, params: Params) -> list[str]:
    """The domains to keep: `data.domains`, or the `data.top_domains` largest, or all; a named domain without data is an error."""
    sizes = inter["domain"].value_counts()
    if params.data.domains:
        empty = [d for d in params.data.domains if d not in sizes.index]
        if empty:
            raise PreparationError(
                f"domain(s) {empty} have no valid interactions (found: {sorted(sizes.index)}); "
                "fix data.domains in params.yaml or the sources"
            )
        return list(params.data.domains)
    if params.data.top_domains:
        return list(sizes.index[: params.data.top_domains])
    return sorted(sizes.index)


def kcore_mask(user_key: np.ndarray, item_key: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Iterative k-core: keep events whose user group and item both have enough kept events."""
    alive = np.ones(len(user_key), dtype=bool)
    while True:
        u_count = np.bincount(user_key[alive], minlength=user_key.max(initial=-1) + 1)
        i_count = np.bincount(item_key[alive], minlength=item_key.max(initial=-1) + 1)
        keep = alive & (u_count[user_key] >= min_user) & (i_count[item_key] >= min_item)
        if keep.sum() == alive.sum():
            return keep
        alive = keep


def read_validated(layout: DataLayout) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables that passed validation, refusing outputs of a failed, unfinished or outdated validation."""
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
    inter = read_table(layout.validated / "interactions.parquet")
    for name, table in (("items", items), ("interactions", inter)):
        if not len(table):
            raise PreparationError(f"{layout.validated / (name + '.parquet')}: no {name} passed validation; "
                                   f"nothing to prepare")
    return items, inter


def prepare(params: Params) -> dict:
    """Read data/validated, write data/prepared (items, users, events, data settings, manifest.json) in one swap."""
    layout = DataLayout(params.data_root)
    items, inter = read_validated(layout)
    with stage_output(layout.prepared, "llmrec prepare") as out:
        return _prepare_into(out, items, inter, params)


def _prepare_into(out: Path, items: pd.DataFrame, inter: pd.DataFrame, params: Params) -> dict:
    rows_in = len(inter)
    inter, domains, dropped = filter_events(inter, params)
    indexed = index_events(items, inter, domains, params.prepare)
    write_tables(out, indexed, inter, dropped)
    write_mixed(out, indexed, params.prepare.max_history)
    write_in_domain(out, indexed, params.prepare.max_history)
    manifest = build_manifest(out, domains, rows_in, dropped, params)
    if params.prepare.time_split is not None:  # the new-item setting: a split by time instead of leave-one-out
        manifest = with_time_split(out, manifest, params.prepare)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def filter_events(inter: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    """Selected domains, each user's events in time order, without duplicates, consecutive repeats, the k-core's
    leftovers and users too short to split; returns (kept events, domains, every dropped event with its reason)."""
    cfg = params.prepare
    rows_in = len(inter)
    dropped: list[pd.DataFrame] = []

    domains = select_domains(inter, params)
    inter = _drop(inter, ~inter["domain"].isin(domains).to_numpy(), "domain not selected", dropped)

    # Time order per user; ties keep file order, so the result does not depend on sort internals.
    user_code, user_ids = pd.factorize(inter["user_id"], sort=True)
    file_code = pd.factorize(inter["source_file"])[0]
    order = np.lexsort((inter["source_line"].to_numpy(), file_code, inter["timestamp"].to_numpy(), user_code))
    inter = inter.iloc[order].reset_index(drop=True)

    inter = _drop(inter, inter.duplicated(["user_id", "item_id", "timestamp"]).to_numpy(), "duplicate event", dropped)
    if cfg.drop_consecutive_repeats:
        same_user = inter["user_id"].to_numpy()[1:] == inter["user_id"].to_numpy()[:-1]
        same_item = inter["item_id"].to_numpy()[1:] == inter["item_id"].to_numpy()[:-1]
        repeat = np.concatenate([[False], same_user & same_item])
        inter = _drop(inter, repeat, "consecutive repeat of the same item", dropped)

    if cfg.kcore_scope == "mixed":
        user_key = pd.factorize(inter["user_id"])[0]
    else:
        user_key = pd.factorize(inter["user_id"] + "\x1f" + inter["domain"])[0]
    item_key = pd.factorize(inter["item_id"])[0]
    keep = kcore_mask(user_key, item_key, cfg.min_user_interactions, cfg.min_item_interactions)
    inter = _drop(inter, ~keep, f"k-core ({cfg.kcore_scope}: user>={cfg.min_user_interactions}, "
                                f"item>={cfg.min_item_interactions})", dropped)
    per_user = inter.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    inter = _drop(inter, per_user < 3, "user has fewer than 3 events (no train/valid/test split)", dropped)

    empty = sorted(set(domains) - set(inter["domain"].unique()))
    if empty:
        raise PreparationError(
            f"domain(s) {empty} have no interactions left after filtering (k-core {cfg.kcore_scope}, "
            f"user>={cfg.min_user_interactions}, item>={cfg.min_item_interactions}); lower prepare.min_* "
            "or remove the domain(s)"
        )
    domains = [d for d in domains if d in set(inter["domain"].unique())]

    dropped_frame = (pd.concat(dropped, ignore_index=True) if dropped
                     else pd.DataFrame(columns=["user_id", "item_id", "domain", "timestamp", "source_file",
                                                "source_line", "reason"]))
    assert len(inter) + len(dropped_frame) == rows_in, "every input event is either kept or dropped with a reason"
    return inter, domains, dropped_frame


@dataclass
class IndexedEvents:
    """The kept events as integer arrays (user-major, time-ordered) and the catalogue they index."""

    catalog: pd.DataFrame  # item_idx, item_id, domain, title, train_count, group; domains are contiguous ranges
    domains: list[str]
    user_idx: np.ndarray
    item_idx: np.ndarray
    domain_code: np.ndarray
    split_code: np.ndarray  # 0 train, 1 valid, 2 test (leave-one-out on each user's mixed history)
    starts: np.ndarray  # each user's first event
    lengths: np.ndarray  # and number of events


def index_events(items: pd.DataFrame, inter: pd.DataFrame, domains: list[str], cfg) -> IndexedEvents:
    """Items sorted by (domain, item_id), so each domain is a contiguous id range; the leave-one-out split;
    item groups from the training counts."""
    catalog = items[items["item_id"].isin(inter["item_id"].unique())].copy()
    catalog["domain"] = pd.Categorical(catalog["domain"], categories=domains)
    catalog = catalog.sort_values(["domain", "item_id"]).reset_index(drop=True)
    catalog["domain"] = catalog["domain"].astype("string")
    catalog["item_idx"] = np.arange(len(catalog), dtype=np.int32)
    catalog["title"] = catalog["title"].str.slice(0, cfg.title_max_chars)
    item_idx = pd.Index(catalog["item_id"]).get_indexer(inter["item_id"]).astype(np.int32)
    user_idx = pd.factorize(inter["user_id"])[0].astype(np.int32)  # events are user-sorted: ids follow
    domain_code = pd.Categorical(inter["domain"], categories=domains).codes.astype(np.int16)

    starts, lengths = group_starts(user_idx)
    from_end = np.repeat(starts + lengths - 1, lengths) - np.arange(len(user_idx))
    split_code = np.minimum(2 - np.minimum(from_end, 2), 2)  # 0 train, 1 valid, 2 test
    train_count = np.bincount(item_idx[split_code == 0], minlength=len(catalog))
    catalog["train_count"] = train_count.astype(np.int64)
    catalog["group"] = item_groups(train_count, cfg.tail_fraction)
    return IndexedEvents(catalog, domains, user_idx, item_idx, domain_code, split_code, starts, lengths)


def write_tables(out: Path, ev: IndexedEvents, inter: pd.DataFrame, dropped: pd.DataFrame) -> None:
    """items, users, events (with their split) and dropped (with reasons)."""
    write_table(ev.catalog[["item_idx", "item_id", "domain", "title", "train_count", "group"]], out / "items.parquet")
    write_table(pd.DataFrame({"user_idx": np.arange(len(ev.starts), dtype=np.int32),
                              "user_id": inter["user_id"].to_numpy()[ev.starts]}), out / "users.parquet")
    write_table(pd.DataFrame({"user_idx": ev.user_idx, "item_idx": ev.item_idx, "domain": inter["domain"].to_numpy(),
                              "timestamp": inter["timestamp"].to_numpy(), "split": SPLITS[ev.split_code]}),
                out / "events.parquet")
    write_table(dropped, out / "dropped.parquet")


def write_mixed(out: Path, ev: IndexedEvents, max_history: int) -> None:
    """Mixed: one time-ordered history across all domains; its training sequences and valid/test rows."""
    train_len = ev.lengths - 2
    write_sequences(out / "sequences_mixed.parquet", {"user_idx": np.arange(len(ev.starts), dtype=np.int32)},
                    gather_ranges(ev.item_idx, ev.starts, train_len))
    target_pos = np.concatenate([ev.starts + ev.lengths - 2, ev.starts + ev.lengths - 1])
    full_hist = np.concatenate([train_len, train_len + 1])
    _write_eval(out / "eval_mixed.parquet", ev.item_idx, ev.user_idx, np.asarray(ev.domains, dtype=object)[ev.domain_code],
                ev.catalog["group"].to_numpy(), target_pos, full_hist, max_history, n_users=len(ev.starts))


def write_in_domain(out: Path, ev: IndexedEvents, max_history: int) -> None:
    """In-domain: each user's sub-sequence per domain (Single Domain and S2PIAO), and the same targets."""
    domains, domain_names = ev.domains, np.asarray(ev.domains, dtype=object)
    position = np.arange(len(ev.user_idx))
    by_domain = np.lexsort((position, ev.domain_code, ev.user_idx))
    key = ev.user_idx[by_domain].astype(np.int64) * len(domains) + ev.domain_code[by_domain]
    g_starts, g_lengths = group_starts(key)
    rank = rank_within_groups(g_starts, g_lengths)
    d_items, d_split = ev.item_idx[by_domain], ev.split_code[by_domain]
    train_sorted = d_split == 0
    t_key = key[train_sorted]
    t_starts, t_lengths = group_starts(t_key)
    write_sequences(
        out / "sequences_in_domain.parquet",
        {"user_idx": (t_key[t_starts] // len(domains)).astype(np.int32),
         "domain": domain_names[(t_key[t_starts] % len(domains)).astype(int)]},
        gather_ranges(d_items[train_sorted], t_starts, t_lengths),
    )
    targets_sorted = np.flatnonzero(d_split > 0)
    # Order in-domain eval rows like eval_mixed (valid targets of all users, then test targets).
    targets_sorted = targets_sorted[np.lexsort((ev.user_idx[by_domain][targets_sorted], d_split[targets_sorted]))]
    _write_eval(out / "eval_in_domain.parquet", d_items, ev.user_idx[by_domain], domain_names[ev.domain_code[by_domain]],
                ev.catalog["group"].to_numpy(), targets_sorted, rank[targets_sorted], max_history, n_users=None,
                split=d_split[targets_sorted])


def _write_eval(path: Path, items: np.ndarray, users: np.ndarray, domains: np.ndarray, groups: np.ndarray,
                target_pos: np.ndarray, history_len: np.ndarray, max_history: int, n_users: int | None,
                split: np.ndarray | None = None) -> None:
    """One row per target: the target, its domain and group, and the (capped) history before it."""
    shown = np.minimum(history_len, max_history)
    if split is None:  # targets given as [valid of every user, test of every user]
        split = np.repeat([1, 2], n_users)
    targets = items[target_pos]
    table = pa.table({
        "user_idx": pa.array(users[target_pos].astype(np.int32)),
        "split": pa.array(SPLITS[split]),
        "target": pa.array(targets.astype(np.int32)),
        "domain": pa.array(domains[target_pos].astype(str)),
        "group": pa.array(groups[targets].astype(str)),
        "history_len": pa.array(history_len.astype(np.int32)),
        "history": gather_ranges(items, target_pos - shown, shown),
    })
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def _pairs(lengths: pd.Series) -> int:
    """Training examples from sequences: every prefix of length >= 1 predicts the next item."""
    return int(np.clip(lengths.to_numpy() - 1, 0, None).sum())


def build_manifest(out: Path, domains: list[str], rows_in: int, dropped: pd.DataFrame, params: Params) -> dict:
    """Counts of the prepared data (users, items, interactions, drops by reason, per domain and per data setting) and the prepare params."""
    events = pq.read_table(out / "events.parquet", columns=["user_idx", "item_idx", "domain", "split"]).to_pandas()
    items = pq.read_table(out / "items.parquet", columns=["domain", "group"]).to_pandas()
    mixed = pq.read_table(out / "sequences_mixed.parquet").to_pandas()
    in_domain = pq.read_table(out / "sequences_in_domain.parquet").to_pandas()
    ev_mixed = pq.read_table(out / "eval_mixed.parquet", columns=["split", "domain", "group", "history_len"]).to_pandas()
    ev_dom = pq.read_table(out / "eval_in_domain.parquet", columns=["split", "domain", "history_len"]).to_pandas()
    mixed_len = mixed["items"].map(len)
    dom_len = in_domain["items"].map(len)
    test_m, test_d = ev_mixed[ev_mixed["split"] == "test"], ev_dom[ev_dom["split"] == "test"]

    per_domain = {}
    for d in domains:
        ev = events[events["domain"] == d]
        per_domain[d] = {
            "users": int(ev["user_idx"].nunique()),
            "items": int((items["domain"] == d).sum()),
            "interactions": int(len(ev)),
            "test_targets": int((test_m["domain"] == d).sum()),
            "test_groups": {g: int(n) for g, n in test_m[test_m["domain"] == d]["group"].value_counts().items()},
        }

    lodo = {}
    for d in domains:
        # Leave-one-domain-out: train on the other domains' events, test on the held-out domain.
        other = events[(events["split"] == "train") & (events["domain"] != d)]
        seq_len = other.groupby("user_idx").size()
        lodo[d] = {"train_examples": _pairs(seq_len), "test_targets": int((test_m["domain"] == d).sum())}

    settings = {
        "mixed": {"models": 1, "train_sequences": int((mixed_len >= 2).sum()), "train_examples": _pairs(mixed_len),
                  "test_targets": len(test_m), "test_without_history": int((test_m["history_len"] == 0).sum())},
        "s2piao": {"models": 1, "train_sequences": int((dom_len >= 2).sum()), "train_examples": _pairs(dom_len),
                   "test_targets": len(test_d), "test_without_history": int((test_d["history_len"] == 0).sum())},
        "single_domain": {
            d: {"train_sequences": int(((dom_len >= 2) & (in_domain["domain"] == d)).sum()),
                "train_examples": _pairs(dom_len[in_domain["domain"] == d]),
                "test_targets": int((test_d["domain"] == d).sum()),
                "test_without_history": int(((test_d["domain"] == d) & (test_d["history_len"] == 0)).sum())}
            for d in domains
        },
        "leave_one_domain_out": lodo,
    }
    return {
        "interactions_in": rows_in,
        "interactions_kept": int(len(events)),
        "dropped": {str(k): int(v) for k, v in dropped["reason"].value_counts().items()},
        "users": int(events["user_idx"].nunique()),
        "items": int(len(items)),
        "domains": per_domain,
        "settings": settings,
        "params": json.loads(params.prepare.model_dump_json(exclude_none=True)),  # an option left off is not listed
    }

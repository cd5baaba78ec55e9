"""The new-item setting: a split by time that mirrors the product (`prepare.time_split`).

A model is trained on everything before a cutoff and then serves a window of time: items that first
appear after the cutoff reach it as text only, never through training. Evaluation encodes their titles as
the `ingest-new-items` path does (tests/model/test_new_item_path.py checks that the vectors are the same).

- T is the time from which about `new_item_share` of the catalogue first appears. The model trains on
  events before the cutoff T + `train_shift_days` (a later cutoff: a scheduled retraining).
- Test rows are every event in the window [T + `test_offset_days`, + `window_days`), each with the whole
  past of its user (pre- and post-cutoff events) as `seen`, and the last `max_history` of it as history.
  An event with no past is left out (counted in the manifest). With `warm_test_sample`, every new-item
  event is a test row but only a seeded sample of the warm ones (a long window's cost bounded).
- Validation rows are each user's last event before the cutoff (users with two or more); the rest of
  the pre-cutoff events are the training sequences.
- Item groups come from the training counts; an item with no event before the cutoff is "new".

Only the Mixed setting is defined on a time split: the in-domain files are removed. The k-core filter of
`prepare` ran on all events, so a new item here is one that gathers enough ratings later. The catalogue
holds every item, and evaluation ranks every one; training does not see new items at all: they are never
negatives (LLM-Rec's same-domain and item-bank negatives) nor columns of the softmax of SASRec and the
sequence head (`SettingData.known_items`), as for a model trained at the cutoff.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .parquet_io import write_table
from .sequences import gather_ranges, group_starts, group_starts_with_empty
from .splits import SPLITS, item_groups, write_sequences

DAY = 86_400


def cutoff_times(first_seen: np.ndarray, cfg) -> tuple[int, int, int]:
    """(training cutoff, test window start, test window end) in seconds, from each item's first event time."""
    base = int(np.quantile(first_seen, 1.0 - cfg.new_item_share, method="higher"))
    start = base + int(cfg.test_offset_days * DAY)
    return base + int(cfg.train_shift_days * DAY), start, start + int(cfg.window_days * DAY)


def apply_time_split(out: Path, cfg, max_history: int, tail_fraction: float) -> dict:
    """Rewrite the leave-one-out files `prepare` wrote in `out` as a time split; returns the manifest block."""
    events = pd.read_parquet(out / "events.parquet")  # user-major, time-ordered within each user
    items = pd.read_parquet(out / "items.parquet")
    users, item_idx = events["user_idx"].to_numpy(), events["item_idx"].to_numpy()
    times = events["timestamp"].to_numpy()
    first_seen = np.full(len(items), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_seen, item_idx, times)
    cutoff, window_start, window_end = cutoff_times(first_seen, cfg)  # cutoff <= window_start (config checks)

    before = times < cutoff
    starts, lengths = group_starts(users)
    n_before = np.add.reduceat(before.astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
    last_before = starts + n_before - 1  # events are time-ordered per user, so pre-cutoff events come first
    has_valid = n_before >= 2
    is_valid = np.zeros(len(events), dtype=bool)
    is_valid[last_before[has_valid]] = True
    is_train = before & ~is_valid
    position = np.arange(len(events)) - np.repeat(starts, lengths)  # events before this one, per user
    in_window = (times >= window_start) & (times < window_end)
    is_test = in_window & (position > 0)
    skipped_first = int((in_window & (position == 0)).sum())

    train_count = np.bincount(item_idx[is_train], minlength=len(items))
    known = np.bincount(item_idx[before], minlength=len(items)) > 0
    warm = known[item_idx]  # per event: its item appeared before the cutoff
    warm_events = int((is_test & warm).sum())
    is_test = sample_warm_tests(is_test, warm, cfg.warm_test_sample, cfg.sample_seed)
    groups = item_groups(train_count, tail_fraction)
    groups[~known] = "new"
    items = items.assign(train_count=train_count.astype(np.int64), group=groups.astype(str))
    write_table(items, out / "items.parquet")
    split = np.select([is_train, is_valid, is_test], [0, 1, 2], 3)
    write_table(events.assign(split=np.append(SPLITS, "unused")[split]), out / "events.parquet")

    # training sequences: each user's pre-cutoff events but the validation one (possibly none)
    write_sequences(out / "sequences_mixed.parquet", {"user_idx": np.arange(len(starts), dtype=np.int32)},
                     gather_ranges(item_idx[is_train], *group_starts_with_empty(users[is_train], len(starts))))
    rows = np.concatenate([np.flatnonzero(is_valid), np.flatnonzero(is_test)])
    pq.write_table(eval_table(events, rows, position[rows], is_valid[rows], groups, max_history),
                   out / "eval_mixed.parquet", compression="zstd")
    for name in ("sequences_in_domain.parquet", "eval_in_domain.parquet"):
        (out / name).unlink(missing_ok=True)

    test_groups = pd.Series(groups[item_idx[is_test]]).value_counts()
    return {
        "cutoff": int(cutoff), "window": [int(window_start), int(window_end)],
        "cutoff_utc": pd.Timestamp(cutoff, unit="s").isoformat(),
        "window_utc": [pd.Timestamp(t, unit="s").isoformat() for t in (window_start, window_end)],
        "new_items": int((~known).sum()), "train_events": int(is_train.sum()), "valid_rows": int(is_valid.sum()),
        "test_rows": int(is_test.sum()), "test_users": int(np.unique(users[is_test]).size),
        "test_groups": {str(k): int(v) for k, v in test_groups.items()},
        "test_without_history_skipped": skipped_first,
        "test_targets_by_domain": {str(k): int(v) for k, v in
                                   events["domain"][is_test].value_counts().items()},
        **({"test_warm_events": warm_events} if cfg.warm_test_sample is not None else {}),
        "config": cfg.record(),
    }


def sample_warm_tests(is_test: np.ndarray, warm: np.ndarray, sample: int | None, seed: int) -> np.ndarray:
    """`is_test` with at most `sample` of its warm events (a uniform, seeded choice) and every other one kept. The
    events left out stay in their users' histories: only their rows are not scored."""
    candidates = np.flatnonzero(is_test & warm)
    if sample is None or len(candidates) <= sample:
        return is_test
    kept = is_test & ~warm
    kept[np.random.default_rng(seed).choice(candidates, sample, replace=False)] = True
    return kept


def eval_table(events: pd.DataFrame, rows: np.ndarray, past: np.ndarray, valid: np.ndarray, groups: np.ndarray,
               max_history: int) -> pa.Table:
    """Eval rows for the events at `rows`, each with its user's `past` events before it as `seen` and the last
    `max_history` of them as `history`; `valid` marks validation rows (the rest are test rows)."""
    item_idx = events["item_idx"].to_numpy()
    shown = np.minimum(past, max_history)
    return pa.table({
        "user_idx": pa.array(events["user_idx"].to_numpy()[rows].astype(np.int32)),
        "split": pa.array(SPLITS[np.where(valid, 1, 2)]),
        "target": pa.array(item_idx[rows].astype(np.int32)),
        "domain": pa.array(events["domain"].to_numpy()[rows].astype(str)),
        "group": pa.array(groups[item_idx[rows]].astype(str)),
        "history_len": pa.array(past.astype(np.int32)),
        "history": gather_ranges(item_idx, rows - shown, shown),
        "seen": gather_ranges(item_idx, rows - past, past),
    })


def with_time_split(out: Path, manifest: dict, prepare_cfg) -> dict:
    """The manifest of a time split: its block, and the Mixed setting (the only one defined) recounted."""
    block = apply_time_split(out, prepare_cfg.time_split, prepare_cfg.max_history, prepare_cfg.tail_fraction)
    lengths = pq.read_table(out / "sequences_mixed.parquet").column("items").combine_chunks().value_lengths()
    lengths = lengths.to_numpy(zero_copy_only=False)
    mixed = {"models": 1, "train_sequences": int((lengths > 0).sum()),
             "train_examples": int(np.clip(lengths - 1, 0, None).sum()), "test_targets": block["test_rows"],
             "test_without_history": 0}
    return {**manifest, "time_split": block, "settings": {"mixed": mixed}}

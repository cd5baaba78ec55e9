"""Load the prepared data as one data setting sees it: training sequences and evaluation rows."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq


@dataclass
class SettingData:
    """The prepared data as one data setting sees it: the catalogue, its domain ranges, the training sequences and
    the evaluation rows."""

    items: pd.DataFrame  # item_idx, item_id, domain, title, train_count, group
    domain_ranges: dict[str, tuple[int, int]]  # each domain's contiguous item_idx range [start, end)
    seq_values: np.ndarray  # training sequences, flattened
    seq_offsets: np.ndarray  # sequence s is seq_values[seq_offsets[s]:seq_offsets[s + 1]]
    eval_rows: pd.DataFrame  # user_idx, split, target, domain, group, history_len, history, seen

    def known_items(self) -> np.ndarray | None:
        """Which items a model trained on this setting can know of (a bool per item), or None for all of them.
        On a time split, items first seen after the cutoff (group "new") do not exist yet when the model
        trains: they are never its negatives, nor columns of its softmax. Evaluation still ranks them."""
        new = self.items["group"].to_numpy() == "new"
        return ~new if new.any() else None

    def train_counts(self) -> np.ndarray:
        """How often each item occurs in the training sequences (an int per item)."""
        return np.bincount(self.seq_values, minlength=len(self.items))

    def item_domain_codes(self) -> np.ndarray:
        codes = np.empty(len(self.items), dtype=np.int64)
        for code, (start, end) in enumerate(self.domain_ranges.values()):
            codes[start:end] = code
        return codes


def _lists(path: Path, filter_column: str | None = None, value: str | None = None):
    return _table_lists(pq.read_table(path), filter_column, value)


def _table_lists(table, filter_column: str | None = None, value: str | None = None):
    if filter_column is not None:
        table = table.filter(pc.equal(table.column(filter_column), value))
    col = table.column("items").combine_chunks()
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.to_numpy().astype(np.int64)
    return values, offsets - offsets[0]


def seen_before_target(prepared: Path, evals: pd.DataFrame) -> list[np.ndarray]:
    """Everything each eval row's user rated before its target, in every domain: the whole training
    sequence, plus the validation target for test rows. Full ranking excludes these items; `history` is
    only the window a setting shows the model (the last `max_history` items of its own sequence)."""
    table = pq.read_table(prepared / "sequences_mixed.parquet")
    values, offsets = _table_lists(table)
    users = table.column("user_idx").to_numpy()
    seq_of_user = np.full(int(max(users.max(), evals["user_idx"].max())) + 1, -1, dtype=np.int64)
    seq_of_user[users] = np.arange(len(users))
    mixed = pd.read_parquet(prepared / "eval_mixed.parquet", columns=["user_idx", "split", "target"])
    valid = mixed[mixed["split"] == "valid"]
    valid_of_user = np.full(len(seq_of_user), -1, dtype=np.int64)
    valid_of_user[valid["user_idx"].to_numpy()] = valid["target"].to_numpy()
    seq = seq_of_user[evals["user_idx"].to_numpy()]
    extra = np.where(evals["split"].to_numpy() == "test", valid_of_user[evals["user_idx"].to_numpy()], -1)
    return [np.concatenate([values[offsets[q]:offsets[q + 1]] if q >= 0 else values[:0], [v] if v >= 0 else []])
            .astype(np.int64) for q, v in zip(seq, extra)]


def load_setting(prepared: Path, setting: str, domain: str | None = None) -> SettingData:
    """Read the prepared folder's files for `setting` (and `domain`, for the per-domain settings): what training
    and evaluation use."""
    items = pd.read_parquet(prepared / "items.parquet")
    domains = list(dict.fromkeys(items["domain"]))
    starts = items.groupby("domain", sort=False)["item_idx"].agg(["min", "max"])
    ranges = {d: (int(starts.loc[d, "min"]), int(starts.loc[d, "max"]) + 1) for d in domains}
    if domain is not None and domain not in ranges:
        raise ValueError(f"train.domain {domain!r} is not a prepared domain (have: {', '.join(domains)})")

    if setting == "mixed":
        values, offsets = _lists(prepared / "sequences_mixed.parquet")
        evals = pd.read_parquet(prepared / "eval_mixed.parquet")
    elif setting == "s2piao":
        values, offsets = _lists(prepared / "sequences_in_domain.parquet")
        evals = pd.read_parquet(prepared / "eval_in_domain.parquet")
    elif setting == "single_domain":
        values, offsets = _lists(prepared / "sequences_in_domain.parquet", "domain", domain)
        evals = pd.read_parquet(prepared / "eval_in_domain.parquet")
        evals = evals[evals["domain"] == domain].reset_index(drop=True)
    elif setting == "leave_one_domain_out":
        values, offsets = _lists(prepared / "sequences_mixed.parquet")
        start, end = ranges[domain]
        keep = (values < start) | (values >= end)
        seq_id = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        values = values[keep]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(seq_id[keep], minlength=len(offsets) - 1))])
        evals = pd.read_parquet(prepared / "eval_mixed.parquet")
        evals = evals[evals["domain"] == domain].reset_index(drop=True)
    else:
        raise ValueError(f"unknown setting {setting!r}")
    if "seen" in evals:  # a time split stores each row's whole past (data/time_split.py); leave-one-out does not
        evals["seen"] = [np.asarray(s, dtype=np.int64) for s in evals["seen"]]
    else:
        evals = evals.assign(seen=seen_before_target(prepared, evals))
    return SettingData(items, ranges, values, offsets, evals)

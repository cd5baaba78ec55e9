"""manifest.json of `prepare`: counts per domain and per data setting.

They are counted in two steps: `manifest_counts` over some users' events and the evaluation files written from them
(every user on one machine, or one partition's on Ray), then `build_manifest` from their sums (`sum_counts`).
Every count is a sum over users, so the partitions' shares add up to the single-machine numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Params
from .splits import GROUPS

FIRST = "test_group_first_user"  # the one count that is a minimum, not a sum


def _pairs(lengths: np.ndarray) -> int:
    """Training examples from sequences: every prefix of length >= 1 predicts the next item."""
    return int(np.clip(np.asarray(lengths, dtype=np.int64) - 1, 0, None).sum())


def _codes(column, names) -> np.ndarray:
    return pd.Index(names).get_indexer(column.to_numpy(zero_copy_only=False))


def manifest_counts(ev, files: dict[str, Path]) -> dict:
    """The manifest's counts over the events of `ev` (prepare.IndexedEvents) and the evaluation files written from
    them (`files`: their paths by table); the training sequences' counts come from the events."""
    domains, nd = ev.domains, len(ev.domains)
    n_users = len(ev.starts)
    mixed_len = ev.lengths - 2  # write_mixed's training sequences
    # events per (user, domain): all of them, and the training ones (users ranked here: user_idx may be sparse)
    pair = np.repeat(np.arange(n_users, dtype=np.int64) * nd, ev.lengths)
    pair += ev.domain_code
    users_per_domain = (np.bincount(pair, minlength=n_users * nd).reshape(n_users, nd) > 0).sum(axis=0)
    train_by_user_domain = np.bincount(pair[ev.split_code == 0], minlength=n_users * nd).reshape(n_users, nd)
    del pair
    train_by_user = train_by_user_domain.sum(axis=1)
    test_m = pq.read_table(files["eval_mixed"], columns=["user_idx", "split", "domain", "group", "history_len"])
    test_m = test_m.filter(pc.equal(test_m.column("split"), "test"))
    test_d = pq.read_table(files["eval_in_domain"], columns=["split", "domain", "history_len"])
    test_d = test_d.filter(pc.equal(test_d.column("split"), "test"))
    m_domain, d_domain = _codes(test_m.column("domain"), domains), _codes(test_d.column("domain"), domains)
    # test targets per (domain, group), and the first user of each: value_counts' order for ties
    cell = m_domain * len(GROUPS) + _codes(test_m.column("group"), GROUPS)
    first = np.full(nd * len(GROUPS), np.iinfo(np.int64).max)
    np.minimum.at(first, cell, test_m.column("user_idx").to_numpy().astype(np.int64))
    return {
        "users": n_users,
        "interactions": len(ev.user_idx),
        "domain_users": users_per_domain,
        "domain_events": np.bincount(ev.domain_code, minlength=nd),
        # leave-one-domain-out: train on the other domains' events
        "lodo_examples": np.array([_pairs(train_by_user - train_by_user_domain[:, k]) for k in range(nd)]),
        "mixed_sequences": int((mixed_len >= 2).sum()),
        "mixed_examples": _pairs(mixed_len),
        "mixed_test": np.bincount(m_domain, minlength=nd),
        "mixed_test_without_history": int((test_m.column("history_len").to_numpy() == 0).sum()),
        "test_groups": np.bincount(cell, minlength=nd * len(GROUPS)),
        FIRST: first,
        # write_in_domain's training sequences: one per (user, domain) with training events, of their number
        "domain_sequences": (train_by_user_domain >= 2).sum(axis=0),
        "domain_examples": np.clip(train_by_user_domain - 1, 0, None).sum(axis=0),
        "domain_test": np.bincount(d_domain, minlength=nd),
        "domain_test_without_history": np.bincount(d_domain[test_d.column("history_len").to_numpy() == 0],
                                                   minlength=nd),
    }


def sum_counts(shares: list[dict]) -> dict:
    """The counts of several disjoint sets of users (partitions) as one."""
    return {key: np.minimum.reduce([s[key] for s in shares]) if key == FIRST else sum(s[key] for s in shares)
            for key in shares[0]}


def build_manifest(counts: dict, catalog: pd.DataFrame, domains: list[str], rows_in: int, dropped: dict[str, int],
                   params: Params) -> dict:
    """Counts of the prepared data (users, items, interactions, drops by reason, per domain and per data setting)
    and the prepare params."""
    c = {key: np.asarray(value) for key, value in counts.items()}
    items_per_domain = catalog["domain"].value_counts()
    groups = c["test_groups"].reshape(len(domains), len(GROUPS))
    first = c[FIRST].reshape(len(domains), len(GROUPS))

    def ranked(k: int) -> dict[str, int]:  # most test targets first, ties by first user (as value_counts)
        present = sorted(np.flatnonzero(groups[k]), key=lambda g: (-groups[k, g], first[k, g]))
        return {GROUPS[g]: int(groups[k, g]) for g in present}

    per_domain = {d: {"users": int(c["domain_users"][k]), "items": int(items_per_domain.get(d, 0)),
                      "interactions": int(c["domain_events"][k]), "test_targets": int(c["mixed_test"][k]),
                      "test_groups": ranked(k)} for k, d in enumerate(domains)}
    settings = {
        "mixed": {"models": 1, "train_sequences": int(c["mixed_sequences"]), "train_examples": int(c["mixed_examples"]),
                  "test_targets": int(c["mixed_test"].sum()),
                  "test_without_history": int(c["mixed_test_without_history"])},
        "s2piao": {"models": 1, "train_sequences": int(c["domain_sequences"].sum()),
                   "train_examples": int(c["domain_examples"].sum()), "test_targets": int(c["domain_test"].sum()),
                   "test_without_history": int(c["domain_test_without_history"].sum())},
        "single_domain": {d: {"train_sequences": int(c["domain_sequences"][k]),
                              "train_examples": int(c["domain_examples"][k]), "test_targets": int(c["domain_test"][k]),
                              "test_without_history": int(c["domain_test_without_history"][k])}
                          for k, d in enumerate(domains)},
        "leave_one_domain_out": {d: {"train_examples": int(c["lodo_examples"][k]),
                                     "test_targets": int(c["mixed_test"][k])} for k, d in enumerate(domains)},
    }
    return {
        "interactions_in": rows_in,
        "interactions_kept": int(c["interactions"]),
        "dropped": dropped,
        "users": int(c["users"]),
        "items": int(len(catalog)),
        "domains": per_domain,
        "settings": settings,
        "params": _prepare_params(params),
    }


def _prepare_params(params: Params) -> dict:
    """The prepare params that made the data: an option left off is not listed, nor the sample's seed without a
    sample (it changes nothing). The manifest's bytes are in every run's fingerprint, so an option that changes
    nothing must not change them."""
    listed = json.loads(params.prepare.model_dump_json(exclude_none=True))
    if params.prepare.user_sample is None:
        listed.pop("user_sample_seed", None)
    return listed

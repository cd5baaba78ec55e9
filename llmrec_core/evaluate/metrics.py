"""Ranking metrics from the 0-based rank of each target (ties counted against the target)."""
from __future__ import annotations

import numpy as np
import pandas as pd

HISTORY_BUCKETS = [(0, 0), (1, 4), (5, 9), (10, 19), (20, None)]


def metric_values(ranks: np.ndarray, ks: list[int]) -> dict[str, float]:
    """NDCG@k, Recall@k and MRR of 0-based target ranks (full ranking: one relevant item per row)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {"count": int(len(ranks))}
    if not len(ranks):
        return out
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def _bucket(history_len: np.ndarray) -> np.ndarray:
    labels = np.empty(len(history_len), dtype=object)
    for lo, hi in HISTORY_BUCKETS:
        m = (history_len >= lo) & ((history_len <= hi) if hi is not None else True)
        labels[m] = f"{lo}" if hi == lo else (f"{lo}-{hi}" if hi is not None else f"{lo}+")
    return labels


def breakdown(rows: pd.DataFrame, ranks: np.ndarray, ks: list[int]) -> dict:
    """Overall, per domain, per item group (cold/tail/head) and per history length."""
    result = {"overall": metric_values(ranks, ks), "by_domain": {}, "by_group": {}, "by_history_length": {}}
    for key, labels in (("by_domain", rows["domain"].to_numpy()), ("by_group", rows["group"].to_numpy()),
                        ("by_history_length", _bucket(rows["history_len"].to_numpy()))):
        for label in pd.unique(labels):
            result[key][str(label)] = metric_values(ranks[labels == label], ks)
    return result

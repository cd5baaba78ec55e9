"""Rank each target against the items of its domain (full ranking) or against sampled negatives.

Domains are contiguous item-id ranges, so a domain's scores are one matrix product of the
targets' user vectors with that slice of item vectors, done in row chunks to bound memory.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..config import Params
from ..data.settings import SettingData

ScoreFn = Callable[[np.ndarray, int, int], torch.Tensor]  # (row ids, start, end) -> [rows, end-start]


def vector_scores(users: torch.Tensor, items: torch.Tensor) -> ScoreFn:
    """A ScoreFn of inner products between users' and items' vectors."""
    def score(rows: np.ndarray, start: int, end: int) -> torch.Tensor:
        return users[torch.from_numpy(rows)] @ items[start:end].T
    return score


def _exclude(scores: torch.Tensor, histories: list[np.ndarray], targets: np.ndarray, start: int, end: int,
             fill: float = float("-inf")) -> None:
    """Set each row's history items of this domain (other than its target) to `fill`."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    if not lengths.sum():
        return
    cols = np.concatenate(histories)
    rows = np.repeat(np.arange(len(histories)), lengths)
    keep = (cols >= start) & (cols < end) & (cols != np.repeat(targets, lengths))
    scores[torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep] - start)] = fill


def full_ranks(score: ScoreFn, targets: np.ndarray, histories: list[np.ndarray] | None,
               domain_ranges: dict[str, tuple[int, int]], chunk_rows: int = 1024) -> np.ndarray:
    """0-based rank of each target among all items of its domain; ties count against the target.
    History items other than the target are excluded when `histories` is given."""
    ranks = np.empty(len(targets), dtype=np.int64)
    for start, end in domain_ranges.values():
        in_domain = np.flatnonzero((targets >= start) & (targets < end))
        for c in range(0, len(in_domain), chunk_rows):
            rows = in_domain[c: c + chunk_rows]
            scores = score(rows, start, end).float()
            if histories is not None:
                _exclude(scores, [histories[r] for r in rows], targets[rows], start, end)
            local = torch.from_numpy(targets[rows] - start)
            target_score = scores.gather(1, local[:, None])
            ranks[rows] = ((scores >= target_score).sum(1) - 1).numpy()
    return ranks


def sampled_ranks(score: ScoreFn, targets: np.ndarray, histories: list[np.ndarray] | None,
                  domain_ranges: dict[str, tuple[int, int]], negatives: int, seed: int,
                  chunk_rows: int = 1024) -> np.ndarray:
    """The paper's sampled protocol: 0-based rank of each target among `negatives` items drawn uniformly
    without replacement from its domain, never the target and (with `histories`) never an item the user
    rated before it. When fewer items are eligible, all of them are used, which is full ranking. Ties count
    against the target; a fixed seed gives every model the same negatives."""
    rng = np.random.default_rng(seed)
    ranks = np.zeros(len(targets), dtype=np.int64)
    for start, end in domain_ranges.values():
        in_domain = np.flatnonzero((targets >= start) & (targets < end))
        for c in range(0, len(in_domain), chunk_rows):
            rows = in_domain[c: c + chunk_rows]
            local = torch.from_numpy(targets[rows] - start)
            # a uniform key per (row, item); the `negatives` smallest keys among eligible items are a
            # uniform sample without replacement, and ineligible items get an infinite key
            keys = torch.from_numpy(rng.random((len(rows), end - start)))
            if histories is not None:
                _exclude(keys, [histories[r] for r in rows], targets[rows], start, end, fill=float("inf"))
            keys[torch.arange(len(rows)), local] = float("inf")
            chosen = torch.zeros_like(keys, dtype=torch.bool)
            chosen.scatter_(1, keys.topk(min(negatives, end - start), dim=1, largest=False).indices, True)
            chosen &= torch.isfinite(keys)
            scores = score(rows, start, end).float()
            target_score = scores.gather(1, local[:, None])
            ranks[rows] = ((scores >= target_score) & chosen).sum(1).numpy()
    return ranks


def top_k(score: ScoreFn, rows: np.ndarray, start: int, end: int, k: int,
          exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k best items of [start, end) for each row, the `exclude` items of each row left out: (ids, scores)."""
    scores = score(rows, start, end).float()
    if exclude is not None:
        _exclude(scores, exclude, np.full(len(rows), -1), start, end)
    values, idx = scores.topk(min(k, end - start), dim=1)
    return idx.numpy() + start, values.numpy()


def select_rows(data: SettingData, split: str, max_users: int | None, seed: int) -> pd.DataFrame:
    """The eval rows of `split`, at most `max_users` of them (a seeded sample, in their original order)."""
    rows = data.eval_rows[data.eval_rows["split"] == split]
    if max_users is not None and len(rows) > max_users:
        rows = rows.sample(n=max_users, random_state=seed).sort_index()
    return rows.reset_index(drop=True)


def rank_rows(params: Params, score: ScoreFn, rows: pd.DataFrame, data: SettingData) -> np.ndarray:
    """Each row's 0-based target rank under `eval.protocol` (full: every item of the domain; sampled), what the
    user rated before excluded."""
    targets = rows["target"].to_numpy(dtype=np.int64)
    seen = list(rows["seen"]) if params.eval.exclude_history else None  # all earlier items, not only the window
    if params.eval.protocol == "sampled":
        return sampled_ranks(score, targets, seen, data.domain_ranges, params.eval.sampled_negatives,
                             params.eval.seed)
    return full_ranks(score, targets, seen, data.domain_ranges)

"""Training examples: every prefix of a training sequence predicts its next item."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Examples:
    """Training examples: where each target sits in the flattened sequences, and where its sequence starts."""

    target_pos: np.ndarray  # index into seq_values of each example's target
    seq_start: np.ndarray  # where the example's sequence starts in seq_values

    def __len__(self) -> int:
        return len(self.target_pos)


def build_examples(offsets: np.ndarray, max_per_sequence: int | None = None) -> Examples:
    """Every prefix of every sequence with at least one earlier item (the most recent `max_per_sequence` per
    sequence)."""
    lengths = np.diff(offsets)
    pos = np.arange(offsets[-1])
    start = np.repeat(offsets[:-1], lengths)
    end = np.repeat(offsets[1:], lengths)
    keep = pos > start  # position 0 has no history
    if max_per_sequence is not None:
        keep &= pos >= end - max_per_sequence  # the most recent prefixes
    return Examples(pos[keep], start[keep])


def histories(values: np.ndarray, ex: Examples, idx: np.ndarray, max_history: int | None) -> list[np.ndarray]:
    """Each example's past in its sequence: the last `max_history` items (None: all of them)."""
    ends = ex.target_pos[idx]
    starts = ex.seq_start[idx] if max_history is None else np.maximum(ex.seq_start[idx], ends - max_history)
    return [values[s:e] for s, e in zip(starts, ends)]


def ragged_pairs(lists: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) int64 index pairs of per-row item lists: row i repeated once per item of lists[i]."""
    lengths = np.fromiter((len(r) for r in lists), dtype=np.int64, count=len(lists))
    if not lengths.sum():
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    rows = torch.from_numpy(np.repeat(np.arange(len(lists)), lengths))
    return rows, torch.from_numpy(np.concatenate(lists).astype(np.int64))


def rated_columns(candidates: torch.Tensor, rated: list[np.ndarray], positive: torch.Tensor) -> torch.Tensor:
    """(rows, candidates) True where a candidate column is an item the row's user rated before its target
    (other than the target itself): false negatives, which full ranking never counts against the user."""
    mask = torch.zeros(len(rated), len(candidates), dtype=torch.bool)
    rows, items = ragged_pairs(rated)
    if len(items):
        cols = torch.searchsorted(candidates, items).clamp(max=len(candidates) - 1)
        hit = candidates[cols] == items
        mask[rows[hit], cols[hit]] = True
    mask[torch.arange(len(rated)), positive] = False
    return mask


@dataclass
class NegativePool:
    """The items same-domain negatives are drawn from: every item, or only those `known` at training time.
    `items` is sorted, so each domain (a contiguous item range) is a contiguous run of it."""

    items: np.ndarray  # item ids in the pool, ascending
    start: np.ndarray  # per domain code: the domain's first position in `items`
    size: np.ndarray  # per domain code: how many of its items are in the pool

    @classmethod
    def of(cls, domain_ranges: dict[str, tuple[int, int]], n_items: int, known: np.ndarray | None) -> "NegativePool":
        items = np.arange(n_items) if known is None else np.flatnonzero(known)
        bounds = np.asarray(list(domain_ranges.values()), dtype=np.int64).reshape(-1, 2)
        start, end = np.searchsorted(items, bounds[:, 0]), np.searchsorted(items, bounds[:, 1])
        return cls(items, start, end - start)

    def sample(self, targets: np.ndarray, codes: np.ndarray, k: int, generator: torch.Generator) -> torch.Tensor:
        """k pool items per row from the row's target domain (`codes`), never the target (which is in the pool)."""
        position = torch.from_numpy(np.searchsorted(self.items, targets))
        drawn = sample_domain_negatives(position, torch.from_numpy(self.start[codes]),
                                        torch.from_numpy(self.size[codes]), k, generator)
        return torch.from_numpy(self.items)[drawn]


def sample_domain_negatives(targets: torch.Tensor, domain_start: torch.Tensor, domain_size: torch.Tensor,
                            k: int, generator: torch.Generator) -> torch.Tensor:
    """k items per row drawn uniformly from the target's domain, never the target itself."""
    u = torch.rand(len(targets), k, generator=generator)
    draw = (u * (domain_size[:, None] - 1).clamp(min=1)).long()
    local_target = (targets - domain_start)[:, None]
    draw = draw + (draw >= local_target).long()
    return domain_start[:, None] + torch.minimum(draw, (domain_size[:, None] - 1).clamp(min=0))


def log_proposal(targets: np.ndarray, domain_codes: np.ndarray, domain_negatives: int,
                 known: np.ndarray | None = None) -> np.ndarray:
    """log of each item's expected share of a batch's candidate columns, per training row.

    An item enters the candidates as some row's target (as often as it is a training target) or as a
    same-domain negative (k per row, uniform within the domain). Subtracting this from the logits is the
    sampled-softmax ("logQ") correction: the in-batch loss then estimates the softmax over all items, so
    popular items are not pushed down merely for being frequent in-batch negatives. Negatives are drawn
    from the `known` items only (all when None).
    """
    n_items, n_domains = len(domain_codes), int(domain_codes.max()) + 1
    target_share = np.bincount(targets, minlength=n_items) / len(targets)
    domain_share = np.bincount(domain_codes[targets], minlength=n_domains) / len(targets)
    pool = np.ones(n_items, dtype=bool) if known is None else known
    domain_size = np.maximum(np.bincount(domain_codes[pool], minlength=n_domains), 1)
    q = target_share + pool * domain_negatives * domain_share[domain_codes] / domain_size[domain_codes]
    return np.log(np.maximum(q, 1e-12))

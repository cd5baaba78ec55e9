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


def sample_domain_negatives(targets: torch.Tensor, domain_start: torch.Tensor, domain_size: torch.Tensor,
                            k: int, generator: torch.Generator) -> torch.Tensor:
    """k items per row drawn uniformly from the target's domain, never the target itself."""
    u = torch.rand(len(targets), k, generator=generator)
    draw = (u * (domain_size[:, None] - 1).clamp(min=1)).long()
    local_target = (targets - domain_start)[:, None]
    draw = draw + (draw >= local_target).long()
    return domain_start[:, None] + torch.minimum(draw, (domain_size[:, None] - 1).clamp(min=0))


def log_proposal(targets: np.ndarray, domain_codes: np.ndarray, domain_negatives: int) -> np.ndarray:
    """log of each item's expected share of a batch's candidate columns, per training row.

    An item enters the candidates as some row's target (as often as it is a training target) or as a
    same-domain negative (k per row, uniform within the domain). Subtracting this from the logits is the
    sampled-softmax ("logQ") correction: the in-batch loss then estimates the softmax over all items, so
    popular items are not pushed down merely for being frequent in-batch negatives.
    """
    n_items, n_domains = len(domain_codes), int(domain_codes.max()) + 1
    target_share = np.bincount(targets, minlength=n_items) / len(targets)
    domain_share = np.bincount(domain_codes[targets], minlength=n_domains) / len(targets)
    domain_size = np.bincount(domain_codes, minlength=n_domains)
    q = target_share + domain_negatives * domain_share[domain_codes] / domain_size[domain_codes]
    return np.log(np.maximum(q, 1e-12))

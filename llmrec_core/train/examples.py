"""Training examples: every prefix of a training sequence predicts its next item."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Examples:
    target_pos: np.ndarray  # index into seq_values of each example's target
    seq_start: np.ndarray  # where the example's sequence starts in seq_values

    def __len__(self) -> int:
        return len(self.target_pos)


def build_examples(offsets: np.ndarray, max_per_sequence: int | None = None) -> Examples:
    lengths = np.diff(offsets)
    pos = np.arange(offsets[-1])
    start = np.repeat(offsets[:-1], lengths)
    end = np.repeat(offsets[1:], lengths)
    keep = pos > start  # position 0 has no history
    if max_per_sequence is not None:
        keep &= pos >= end - max_per_sequence  # the most recent prefixes
    return Examples(pos[keep], start[keep])


def histories(values: np.ndarray, ex: Examples, idx: np.ndarray, max_history: int) -> list[np.ndarray]:
    ends = ex.target_pos[idx]
    starts = np.maximum(ex.seq_start[idx], ends - max_history)
    return [values[s:e] for s, e in zip(starts, ends)]


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

"""Item-bank negatives: a softmax over every item of the target's domain, as evaluation ranks them.

Encoding the whole catalogue with gradients each step is out of reach, so the bank keeps a vector
for every item, re-encoded without gradients every `item_bank_refresh_steps` optimizer steps (or
each epoch). In a batch, the items the batch encodes anyway (targets and sampled negatives) use their
fresh vectors, so the item tower still learns; every other item of the row's domain uses its bank
vector, so the user tower learns against the whole domain. Items the user already rated are masked,
as full ranking excludes them. The softmax is then exact over the domain: no logQ correction applies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ItemBank:
    vectors: torch.Tensor  # (n_items, dim) L2-normalised item vectors, no gradient
    domains: torch.Tensor  # (n_items,) domain code of each item


def domain_logits(users: torch.Tensor, fresh_items: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor,
                  hists: list[np.ndarray], bank: ItemBank, temperature: float) -> torch.Tensor:
    """(rows, n_items) logits: bank vectors everywhere, fresh vectors in the `candidates` columns, -inf
    for items outside the target's domain and for the row's history (unless it is the target)."""
    device = users.device
    logits = users @ bank.vectors.to(device, users.dtype).T / temperature
    logits = logits.index_copy(1, candidates.to(device), users @ fresh_items.T / temperature)
    domains = bank.domains.to(device)
    allowed = domains[None, :] == domains[targets.to(device)][:, None]
    lengths = np.fromiter((len(h) for h in hists), dtype=np.int64, count=len(hists))
    if lengths.sum():
        rows = torch.from_numpy(np.repeat(np.arange(len(hists)), lengths)).to(device)
        allowed[rows, torch.from_numpy(np.concatenate(hists).astype(np.int64)).to(device)] = False
    allowed[torch.arange(len(targets), device=device), targets.to(device)] = True
    return logits.masked_fill(~allowed, float("-inf"))

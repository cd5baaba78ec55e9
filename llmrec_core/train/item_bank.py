"""Item-bank negatives: a second loss over every item of the target's domain, as evaluation ranks them.

Encoding the whole catalogue with gradients each step is out of reach, so the bank keeps a vector
for every item, re-encoded without gradients every `item_bank_refresh_steps` optimizer steps (or
each epoch). The bank loss is the softmax of each user vector against the bank vectors of every item
of its target's domain, the target's included; the items of the row's history window are masked, as
full ranking excludes what the user rated. It trains the user tower against the whole domain; the item tower learns from the
in-batch loss, which it is added to.

All columns of the bank loss are equally stale on purpose. Putting fresh vectors for the batch's
items beside stale ones for the rest lets the model learn to score "encoded now" above "encoded at
the last refresh", which no refresh can teach it (a first version that did so saw its ml-100k
training loss rise from 3.7 at step 12 to 5.8 at step 61).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .examples import ragged_pairs


@dataclass
class ItemBank:
    """Every item's vector, refreshed without gradients, for the item-bank loss."""

    vectors: torch.Tensor  # (n_items, dim) L2-normalised item vectors, no gradient
    domains: torch.Tensor  # (n_items,) domain code of each item
    known: torch.Tensor | None = None  # (n_items,) bool: items that exist at training time (None: all)


def bank_logits(users: torch.Tensor, targets: torch.Tensor, hists: list[np.ndarray], bank: ItemBank,
                temperature: float) -> torch.Tensor:
    """(rows, n_items) logits of each user against every bank vector; -inf for items outside the target's
    domain, for items not known at training time and for the row's history (unless it is the target)."""
    device = users.device
    targets = targets.to(device)
    logits = users @ bank.vectors.to(device, users.dtype).T / temperature
    domains = bank.domains.to(device)
    allowed = domains[None, :] == domains[targets][:, None]
    if bank.known is not None:
        allowed &= bank.known.to(device)[None, :]
    rows, items = ragged_pairs(hists)
    allowed[rows.to(device), items.to(device)] = False
    allowed[torch.arange(len(targets), device=device), targets] = True
    return logits.masked_fill(~allowed, float("-inf"))

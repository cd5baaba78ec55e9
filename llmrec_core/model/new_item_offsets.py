"""What serving adds to the score of an item the sequence head has no ID embedding for (a new item).

The head orders new items well among themselves but scores them below warm items, whose ID embeddings carry
most of a score. An offset on new items' scores lifts them; `index` sets it:
- `new_item_offset`: every new item gets at least this much, for every user.
- `new_item_offset_calibration`: a user whose last `new_item_offset_window` items include new ones gets more. Their
  offset is the one at which the head's softmax puts on new items the share of probability the user's recent
  history predicts: the share of new items among those last items, shrunk toward the catalogue's share of new
  items with the weight of `new_item_offset_prior_strength` items. It needs no labels, and it follows the users:
  right after training few histories hold new items and it stays low; as users take new items up, it rises.
The offset served is `new_item_offset`, or with calibration on the larger of it and the calibrated one. Ranks
within new items and within warm items never change; only how many top slots new items win.
"""
from __future__ import annotations

import numpy as np

from ..config import IndexConfig


def recent_new_share(recent_new: np.ndarray, lengths: np.ndarray, prior_share: float,
                     prior_strength: float) -> np.ndarray:
    """Each user's expected share of new items among their next ones: the share among their last items
    (`recent_new`: [users, window] bool, padding False; `lengths`: how many of the window are real items)
    shrunk toward `prior_share` with the weight of `prior_strength` items."""
    return (recent_new.sum(1) + prior_strength * prior_share) / (np.asarray(lengths) + prior_strength)


def log_mass(scores: np.ndarray, temperature: float, total: int | None = None) -> np.ndarray:
    """Per row, log sum exp(scores / temperature) over the columns; `total` > columns: the columns are a uniform
    sample of `total` items, and the sum is scaled up to all of them."""
    z = scores / temperature
    top = z.max(1, keepdims=True)
    out = top[:, 0] + np.log(np.exp(z - top).sum(1))
    return out + (np.log(total / scores.shape[1]) if total and total > scores.shape[1] else 0.0)


def calibrated_offsets(log_mass_new: np.ndarray, log_mass_warm: np.ndarray, share: np.ndarray,
                       temperature: float) -> np.ndarray:
    """The offset c per user at which softmax(scores / temperature), with c added to every new item's score,
    puts `share` of its mass on new items: exp((c + s_new) / t) summed over new items over the whole sum = share."""
    return temperature * (np.log(share) - np.log1p(-share) + log_mass_warm - log_mass_new)


def new_item_offsets(cfg: IndexConfig, scores: np.ndarray, unknown: np.ndarray, recent_new: np.ndarray,
                     lengths: np.ndarray, temperature: float, sample_rows: np.ndarray | None = None) -> np.ndarray:
    """The offset added to new items' scores, per user (row of `scores`: [users, items] over `sample_rows` of the
    catalogue, every item when None). `unknown`: a bool per catalogue item; `recent_new`, `lengths`: as in
    `recent_new_share`; `temperature`: the head's softmax is over its scores / temperature (an ensemble of K
    networks sums K logits: K)."""
    fixed = np.full(len(scores), cfg.new_item_offset, dtype=np.float64)
    if not cfg.new_item_offset_calibration or not unknown.any() or unknown.all():
        return fixed
    rows = np.arange(len(unknown)) if sample_rows is None else sample_rows
    new = unknown[rows]
    share = recent_new_share(recent_new, lengths, float(unknown.mean()), cfg.new_item_offset_prior_strength)
    scores = np.asarray(scores, dtype=np.float64)
    offsets = calibrated_offsets(log_mass(scores[:, new], temperature, int(unknown.sum())),
                                 log_mass(scores[:, ~new], temperature, int((~unknown).sum())), share, temperature)
    return np.maximum(fixed, offsets)


def recent_flags(padded: np.ndarray, unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`recent_new` and `lengths` for `new_item_offsets` from histories as a left-padded matrix of their last items
    (ids + 1, 0 = padding: `history_matrix(histories, window)`)."""
    recent = np.concatenate([[False], unknown])[padded]
    return recent, (padded > 0).sum(1)

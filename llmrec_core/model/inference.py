"""Inference with the LM encoder: item titles and history sentences to vectors, in batches, without gradients.

Training (validation, the item bank), evaluation, the sequence head's text vectors and serving all encode
through these two functions, so every consumer gets the same vector for the same text.
"""
from __future__ import annotations

import numpy as np
import torch


def best_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device a module's parameters are on."""
    return next(module.parameters()).device


@torch.no_grad()
def encode_items(bundle, rows: int | np.ndarray, batch_size: int, by_length: bool = False) -> torch.Tensor:
    """Vectors of catalogue items `rows` (an int n: items 0..n-1), in the order given. `by_length` encodes in
    batches of similar title length (a batch pads to its longest title, so sorted batches pad little), for
    whole catalogues; the vectors still come back in the order of `rows`."""
    rows = np.arange(rows) if isinstance(rows, int) else np.asarray(rows, dtype=np.int64)
    order = np.arange(len(rows))
    if by_length:
        lengths = np.fromiter((len(bundle.tokens.item_ids[i]) for i in rows), dtype=np.int64, count=len(rows))
        order = np.argsort(lengths, kind="stable")
    device, out = module_device(bundle.encoder), []
    for start in range(0, len(rows), batch_size):
        ids, mask = bundle.tokens.items(rows[order[start:start + batch_size]])
        out.append(bundle.encoder(ids.to(device), mask.to(device)).cpu())
    if not out:
        return torch.zeros(0, 0)
    vectors = torch.cat(out)
    if by_length:
        restored = torch.empty_like(vectors)
        restored[torch.from_numpy(order)] = vectors  # back to the order of `rows`
        vectors = restored
    return vectors


@torch.no_grad()
def encode_histories(bundle, histories: list[np.ndarray], batch_size: int) -> torch.Tensor:
    """One vector per history (catalogue rows, oldest first), each written as a sentence of titles."""
    device, out = module_device(bundle.encoder), []
    for s in range(0, len(histories), batch_size):
        ids, mask = bundle.tokens.users(histories[s: s + batch_size])
        out.append(bundle.encoder(ids.to(device), mask.to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, 1)

"""Item and user texts as token ids, tokenised once per run.

Each item title is tokenised once (with its separator); a user sentence is the concatenation of
the token ids of their most recent titles, oldest first, cut from the oldest side so the newest
items always fit in `max_tokens`.
"""
from __future__ import annotations

import numpy as np
import torch


class TextTokens:
    """Token ids of every catalogue title, and the history sentences built from them (newest titles kept)."""

    def __init__(self, tokenizer, titles: list[str], domains: list[str], item_template: str, separator: str,
                 item_max_tokens: int, user_max_tokens: int):
        self.tok = tokenizer
        texts = [item_template.format(title=t, domain=d.replace("_", " ")) for t, d in zip(titles, domains)]
        ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=item_max_tokens)["input_ids"]
        sep = tokenizer(separator, add_special_tokens=False)["input_ids"]
        self.item_ids = [np.asarray(x, dtype=np.int64) for x in ids]
        self.item_ids_sep = [np.asarray(x + sep, dtype=np.int64) for x in ids]
        bos = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else (
            [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [])
        eos = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
        self.bos, self.eos = bos, eos
        self.user_max_tokens = user_max_tokens
        self.pad = tokenizer.pad_token_id

    def _pad(self, rows: list[list[int] | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(r) for r in rows))
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def items(self, item_idx) -> tuple[torch.Tensor, torch.Tensor]:
        return self._pad([np.concatenate([self.bos, self.item_ids[i], self.eos]) for i in item_idx])

    def users(self, histories) -> tuple[torch.Tensor, torch.Tensor]:
        budget = self.user_max_tokens - len(self.bos) - len(self.eos)
        rows = []
        for hist in histories:
            parts = [self.item_ids_sep[i] for i in hist]
            if parts:
                parts[-1] = self.item_ids[hist[-1]]  # no separator after the newest title
                body = np.concatenate(parts)[-budget:]
            else:
                body = np.zeros(0, dtype=np.int64)
            rows.append(np.concatenate([self.bos, body, self.eos]))
        return self._pad(rows)

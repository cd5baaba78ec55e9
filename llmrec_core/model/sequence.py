"""SASRec (Kang & McAuley, 2018): the ID-based sequential baseline, in the same harness and splits.

A causal self-attention encoder over item-id embeddings; the last position's state scores every item
by dot product with the (shared) item embeddings, which are scaled by sqrt(hidden) on input as in the
paper. Trained with cross-entropy over all items of the setting (RecBole's `loss_type: CE`) at every
position of every training sequence: a sequence longer than `max_len + 1` is cut into windows of
`max_len + 1` items that end at its last item and step back by `max_len`, so each training target is
predicted exactly once per epoch, from up to `max_len` earlier items. Evaluation reads up to `max_len`
items of the user's past in the setting. Sequences are left-padded; padded positions attend only to
themselves, so no real position ever sees padding and no row of the attention is empty.

The same network is LLM-Rec's sequence head (`seqhead`, UniSRec-style) when it is given `text`, the LM's
vector of every item title: the LM as pre-trained, or LLM-Rec's fine-tuned one (`seqhead.item_vectors`), whose
title vectors already carry what the training histories taught it. An item's embedding is then a learned
projection of its text vector plus, with `item_ids`, an ID embedding that starts at zero and is dropped per
item with probability `id_dropout` in training. Only items seen in training have an ID embedding (`known`): any
other item, a new one included, is ranked by its title alone, and ID dropout keeps that ranking trained.

With `members` = K > 1 either network is an ensemble (`HeadEnsemble`) of K, initialised from seeds `seed * K` to
`seed * K + K - 1` (`member_seeds`: the ensembles of two experiment seeds share no network). Each member scores an
item by its own dot product and the ensemble by their sum, which is one dot product of the members' concatenated
user and item vectors, so evaluation and the serving index treat it as one model with K * `hidden` dimensions.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..config import SasrecConfig


class SASRec(nn.Module):
    """The causal self-attention network over item embeddings (ID, or projected title vectors for the head)."""

    def __init__(self, n_items: int, cfg: SasrecConfig, max_len: int, text: torch.Tensor | None = None,
                 known: torch.Tensor | None = None, store_text: bool = True):
        """`store_text=False`: the title vectors stay out of the state dict (an ensemble stores them once)."""
        super().__init__()
        self.max_len, self.heads, self.scale = max_len, cfg.heads, math.sqrt(cfg.hidden)
        self.id_dropout = getattr(cfg, "id_dropout", 0.0) if text is not None else 0.0
        self.items = None
        if text is None or getattr(cfg, "item_ids", False):
            self.items = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)  # id 0 is padding
            if text is None:
                nn.init.normal_(self.items.weight, std=0.02)
            else:
                nn.init.zeros_(self.items.weight)
        self.text_proj = None
        if text is not None:
            self.register_buffer("text", F.normalize(text.float(), dim=-1), persistent=store_text)
            self.text_proj = nn.Linear(text.shape[1], cfg.hidden)
            if self.items is not None:  # 1.0 for items with an ID embedding (seen in training), else 0.0
                self.register_buffer("known", torch.ones(n_items, 1) if known is None else known.float().reshape(-1, 1))
        self.positions = nn.Embedding(max_len, cfg.hidden)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.heads, cfg.hidden * 4, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.positions.weight, std=0.02)

    def item_table(self) -> torch.Tensor:
        """[n_items + 1, H] item embeddings, row 0 padding. In training, a fresh ID dropout per call: use one
        table for a step's inputs and outputs."""
        if self.text_proj is None:
            return self.items.weight
        vectors = self.text_proj(self.text)
        if self.items is not None:
            ids = self.items.weight[1:] * self.known
            if self.training and self.id_dropout:
                ids = ids * (torch.rand(len(ids), 1, device=ids.device) >= self.id_dropout)
            vectors = vectors + ids
        return torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])

    def forward(self, seq: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """seq: [B, L] item ids + 1, left-padded with 0 -> hidden states [B, L, H]."""
        L = seq.shape[1]
        pad = seq == 0
        table = self.item_table() if table is None else table
        x = F.embedding(seq, table, padding_idx=0) * self.scale + self.positions.weight[-L:]
        x = self.dropout(x).masked_fill(pad[..., None], 0.0)
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        future = torch.ones(L, L, dtype=torch.bool, device=seq.device).triu(1)
        blocked = future | (pad[:, None, :] & ~eye)  # True = may not attend
        h = self.blocks(x, mask=blocked.repeat_interleave(self.heads, dim=0))
        return self.norm(h)

    def item_vectors(self) -> torch.Tensor:
        return self.item_table()[1:]

    def text_vectors(self, text: torch.Tensor) -> torch.Tensor:
        """Item vectors from title vectors alone (a new item's: it has no ID embedding)."""
        return self.text_proj(F.normalize(text.float(), dim=-1))

    @torch.no_grad()
    def user_vectors(self, seqs: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
        table = self.item_table()
        out = [self(torch.from_numpy(seqs[s: s + batch_size]).to(table.device), table)[:, -1].cpu()
               for s in range(0, len(seqs), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, table.shape[1])


class HeadEnsemble(nn.Module):
    """`members` SASRec networks behind SASRec's interface, their vectors side by side: a user's score for an
    item, the dot product of the concatenations, is the sum of the members' scores. The title vectors are
    stored once."""

    def __init__(self, n_items: int, cfg: SasrecConfig, max_len: int, text: torch.Tensor | None = None,
                 known: torch.Tensor | None = None):
        super().__init__()
        self.max_len, self.width = max_len, cfg.hidden
        members = []
        for seed in member_seeds(cfg):
            torch.manual_seed(seed)  # each member starts as a single network of its seed would
            members.append(SASRec(n_items, cfg, max_len, text, known, store_text=False))
        self.members = nn.ModuleList(members)
        if text is not None:
            self.register_buffer("text", members[0].text)  # the members' buffers are this tensor

    def _split(self, table: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return table.split(self.width, dim=-1)

    def item_table(self) -> torch.Tensor:
        return torch.cat([m.item_table() for m in self.members], dim=-1)

    def forward(self, seq: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        tables = self._split(table) if table is not None else [None] * len(self.members)
        return torch.cat([m(seq, t) for m, t in zip(self.members, tables)], dim=-1)

    def item_vectors(self) -> torch.Tensor:
        return torch.cat([m.item_vectors() for m in self.members], dim=-1)

    def text_vectors(self, text: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.text_vectors(text) for m in self.members], dim=-1)

    def user_vectors(self, seqs: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([m.user_vectors(seqs, batch_size) for m in self.members], dim=-1)


def member_seeds(cfg: SasrecConfig) -> list[int]:
    """The seed of each network of `cfg`'s model: `seed` for one network, `seed * K + k` for member k of K."""
    return [cfg.seed] if cfg.members == 1 else [cfg.seed * cfg.members + k for k in range(cfg.members)]


def build_head(n_items: int, cfg: SasrecConfig, text: torch.Tensor | None = None,
               known: torch.Tensor | None = None) -> SASRec | HeadEnsemble:
    """SASRec or the sequence head as `cfg` describes it: one network, or an ensemble of `cfg.members`."""
    if cfg.members == 1:
        return SASRec(n_items, cfg, cfg.max_len, text, known)
    return HeadEnsemble(n_items, cfg, cfg.max_len, text, known)


def head_members(model: SASRec | HeadEnsemble) -> list[SASRec]:
    """The networks a model trains: its ensemble's members, or itself."""
    return list(model.members) if isinstance(model, HeadEnsemble) else [model]


def pad_left(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """The last `width` items of each ragged row as ids + 1, left-padded with 0 (vectorised)."""
    ends = starts + lengths
    pos = ends[:, None] - width + np.arange(width)[None, :]
    valid = pos >= starts[:, None]
    return np.where(valid, values[np.clip(pos, 0, None)] + 1, 0).astype(np.int64)


def history_matrix(histories: pd.Series, width: int) -> np.ndarray:
    """Histories (ragged) as a left-padded matrix of their last `width` items, ids + 1."""
    arrays = [np.asarray(h, dtype=np.int64) for h in histories]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    values = np.concatenate(arrays) if lengths.sum() else np.zeros(1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return pad_left(values, starts, lengths, width)


HEADS = ("sasrec", "seqhead")  # the ID baseline, and LLM-Rec's sequence head over the LM's item vectors


def load_head(path: Path, n_items: int, cfg: SasrecConfig, head: str = "sasrec") -> SASRec | HeadEnsemble:
    """The trained SASRec or sequence head (`cfg`, its config) whose weights are at `path`, in eval mode."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `llmrec train --model {head}` first")
    state = load_file(path)
    model = build_head(n_items, cfg, state.get("text"))
    model.load_state_dict(state)
    return model.eval()


def score_temperature(model: SASRec | HeadEnsemble) -> float:
    """The head's softmax is over its scores / this: an ensemble's score is the sum of its networks' logits."""
    return float(len(model.members)) if isinstance(model, HeadEnsemble) else 1.0


def unknown_items(model: SASRec | HeadEnsemble) -> np.ndarray:
    """A bool per prepared item: the head has no ID embedding for it (never seen in its training). All False for
    a head without ID embeddings (`seqhead.item_ids: false`), which ranks every item by its title alone."""
    net = model.members[0] if isinstance(model, HeadEnsemble) else model
    known = getattr(net, "known", None)
    if net.items is None or known is None:
        return np.zeros(net.text.shape[0], dtype=bool)
    return known[:, 0].cpu().numpy() == 0

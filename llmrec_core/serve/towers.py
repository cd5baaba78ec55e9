"""The models `llmrec index` and `llmrec serve` can answer with (`index.model`), behind one interface.

- `LMTower` (llmrec): the fine-tuned LM writes a user's recent history as one sentence and encodes it; each
  item is its encoded title.
- `SeqHeadTower` (seqhead): the sequence head reads the history as a sequence of item vectors (the LM's title
  vector, pre-trained or fine-tuned as `seqhead.item_vectors` says, projected, plus an ID embedding for items
  seen in training); a new item is its projected title vector, so it can be recommended before any retraining,
  and its score gets an offset because it has no ID embedding (`new_item_offset`, new_item_offsets.py).

A tower gives item vectors for the index (`item_vectors`) and one user vector for a history
(`user_vector`: titles, domains and catalogue rows, -1 for a title not in the catalogue).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from ..config import IndexConfig, Params
from ..evaluate.trained import lm_encoder, load_sasrec
from ..model.bundle import EncoderBundle
from ..model.inference import encode_histories, encode_items
from ..model.new_item_offsets import new_item_offsets
from ..model.sequence import score_temperature, unknown_items
from ..model.text import TextTokens


def weights_path(params: Params) -> Path:
    """The trained weights the index of `index.model` is built from."""
    run_dir = params.seqhead.run_dir if params.index.model == "seqhead" else params.train.run_dir
    return params.resolve(run_dir) / "weights.safetensors"


class Tower(Protocol):
    """What serving asks of a model: item vectors for the index, a user vector for a history, and the offset added to
    the scores of items it has no ID embedding for (`unknown`: a flag per indexed item, None when it has none)."""

    kind: str
    window: int
    unknown: np.ndarray | None

    def item_vectors(self, rows: pd.DataFrame) -> np.ndarray: ...

    def user_vector(self, history: pd.DataFrame) -> np.ndarray: ...

    def new_item_offset(self, cfg: IndexConfig, vector: np.ndarray, history: pd.DataFrame) -> float: ...

    def new_item_offsets(self, cfg: IndexConfig, vectors: np.ndarray, rows: list[np.ndarray],
                         item_scores: np.ndarray | None = None) -> np.ndarray: ...

    def extend(self, vectors: np.ndarray) -> None: ...


class LMTower:
    """LLM-Rec: history sentence and item titles through the same LM."""

    kind = "llmrec"
    unknown = None  # the LM ranks every item by its title alone: none lacks an embedding

    def __init__(self, params: Params, bundle: EncoderBundle):
        self.params, self.bundle = params, bundle
        self.window = params.prepare.max_history  # the most recent titles the sentence holds

    def _texts(self, titles: list[str], domains: list[str]) -> EncoderBundle:
        m = self.params.model
        tokens = TextTokens(self.bundle.tokens.tok, titles, domains, m.item_template, m.separator, m.item_max_tokens,
                            m.user_max_tokens)
        return EncoderBundle(self.bundle.encoder, tokens, self.bundle.model_path)

    def item_vectors(self, rows: pd.DataFrame) -> np.ndarray:
        """Vectors of items given by title and domain."""
        texts = self._texts(rows["title"].tolist(), rows["domain"].tolist())
        with torch.no_grad():
            return encode_items(texts, len(rows), self.params.eval.batch_size).numpy()

    def user_vector(self, history: pd.DataFrame) -> np.ndarray:
        """[1, dim]: the history (oldest first) written as one sentence and encoded."""
        texts = self._texts(history["title"].tolist(), history["domain"].tolist())
        with torch.no_grad():
            return encode_histories(texts, [np.arange(len(history))], 1).numpy()

    def new_item_offset(self, cfg: IndexConfig, vector: np.ndarray, history: pd.DataFrame) -> float:
        """No offset: every item's vector is its title's."""
        return 0.0

    def new_item_offsets(self, cfg: IndexConfig, vectors: np.ndarray, rows: list[np.ndarray],
                         item_scores: np.ndarray | None = None) -> np.ndarray:
        """No offset for any user."""
        return np.zeros(len(rows))

    def extend(self, vectors: np.ndarray) -> None:
        """Items were added to the index (nothing to remember: the LM encodes titles afresh)."""


class SeqHeadTower:
    """The sequence head over item vectors; `table` holds every indexed item's vector (catalogue order) and
    `unknown` whether the head has no ID embedding for it (an item new since its training: `new_item_offset` lifts
    these)."""

    CALIBRATION_SAMPLE = 20_000  # items per group (new, warm) whose scores estimate the softmax's mass

    kind = "seqhead"

    def __init__(self, params: Params, model, titles: LMTower, table: np.ndarray, unknown: np.ndarray):
        self.params, self.model, self.titles = params, model.eval(), titles
        self.table = np.asarray(table, dtype=np.float32)
        self.unknown = np.asarray(unknown, dtype=bool)
        if len(self.unknown) != len(self.table):
            raise ValueError(f"{len(self.unknown)} unknown-item flags for {len(self.table)} indexed items")
        self.window = model.max_len
        self.temperature = score_temperature(model)
        self._sample = None

    def item_vectors(self, rows: pd.DataFrame) -> np.ndarray:
        """A new item's vector: its title vector (the head's LM) through the head's projection (no ID embedding)."""
        text = torch.from_numpy(self.titles.item_vectors(rows))
        with torch.no_grad():
            return self.model.text_vectors(text).numpy()

    def user_vector(self, history: pd.DataFrame) -> np.ndarray:
        """[1, hidden]: the head's last state over the history's item vectors (the last `max_len` items)."""
        history = history.iloc[-self.window:]
        rows = history["row"].to_numpy(dtype=np.int64)
        vectors = np.zeros((len(rows), self.table.shape[1]), dtype=np.float32)
        known = rows >= 0
        vectors[known] = self.table[rows[known]]
        if (~known).any():  # titles outside the catalogue: read like new items
            vectors[~known] = self.item_vectors(history[~known])
        # a table of just this history (row 0 is padding) keeps a query's cost independent of the catalogue
        table = torch.cat([torch.zeros(1, vectors.shape[1]), torch.from_numpy(vectors)])
        seq = torch.arange(1, len(rows) + 1).reshape(1, -1)
        with torch.no_grad():
            return self.model(seq, table)[:, -1].numpy()

    def new_item_offset(self, cfg: IndexConfig, vector: np.ndarray, history: pd.DataFrame) -> float:
        """What `cfg` adds to the score of every new item for this user (`new_item_offsets`); a title outside the
        catalogue counts as a new item of the history."""
        return float(self.new_item_offsets(cfg, vector.reshape(1, -1), [history["row"].to_numpy(dtype=np.int64)])[0])

    def new_item_offsets(self, cfg: IndexConfig, vectors: np.ndarray, rows: list[np.ndarray],
                         item_scores: np.ndarray | None = None) -> np.ndarray:
        """`new_item_offset` for many users at once: their vectors [users, hidden] and history rows (-1: a title
        outside the catalogue); one product of the vectors with the calibration sample serves them all, or none
        where the caller has their scores over every indexed item (`item_scores`, [users, items])."""
        if not self.unknown.any():
            return np.zeros(len(rows))
        if not cfg.new_item_offset_calibration:
            return np.full(len(rows), float(cfg.new_item_offset))
        recent = np.zeros((len(rows), cfg.new_item_offset_window), dtype=bool)  # padding: False
        lengths = np.zeros(len(rows), dtype=np.int64)
        for i, history in enumerate(rows):
            last = np.asarray(history, dtype=np.int64)[-cfg.new_item_offset_window:]
            recent[i, :len(last)] = (last < 0) | self.unknown[np.maximum(last, 0)]
            lengths[i] = len(last)
        sample, sample_vectors = self._calibration_sample()
        if item_scores is not None:
            if item_scores.shape != (len(rows), len(self.table)):
                raise ValueError(f"scores {item_scores.shape} for {len(rows)} users over {len(self.table)} items")
            scores = item_scores if sample is None else item_scores[:, sample]
        else:
            scores = np.asarray(vectors, dtype=np.float32).reshape(len(rows), -1) @ sample_vectors.T
        return new_item_offsets(cfg, scores, self.unknown, recent, lengths, self.temperature, sample)

    def _calibration_sample(self) -> tuple[np.ndarray | None, np.ndarray]:
        """(rows, their vectors): every item (rows None), or for a larger catalogue a seeded sample of
        CALIBRATION_SAMPLE new and as many warm items, kept until items are added."""
        if self._sample is None:
            groups = [np.flatnonzero(self.unknown), np.flatnonzero(~self.unknown)]
            if max(len(g) for g in groups) <= self.CALIBRATION_SAMPLE:
                self._sample = (None, self.table)
            else:
                rng = np.random.default_rng(0)
                rows = np.sort(np.concatenate([g if len(g) <= self.CALIBRATION_SAMPLE else
                                               rng.choice(g, self.CALIBRATION_SAMPLE, replace=False) for g in groups]))
                self._sample = (rows, self.table[rows])
        return self._sample

    def extend(self, vectors: np.ndarray) -> None:
        """Items were added to the index: their vectors join the table histories are read from."""
        self.table = np.concatenate([self.table, np.asarray(vectors, dtype=np.float32)])
        self.unknown = np.concatenate([self.unknown, np.ones(len(vectors), dtype=bool)])  # no ID embedding
        self._sample = None


def seqhead_tower(params: Params, n_items: int, catalog: pd.DataFrame, table: np.ndarray | None = None
                  ) -> SeqHeadTower:
    """The trained sequence head over the first `n_items` (prepared) items of `catalog` (its weights hold their
    title vectors), with the LM it was trained on for new titles; `table` defaults to the head's own item vectors."""
    model = load_sasrec(params, n_items, "seqhead")
    if table is None:
        with torch.no_grad():
            table = model.item_vectors().numpy()
    unknown = np.concatenate([unknown_items(model), np.ones(len(table) - n_items, dtype=bool)])  # added: new
    lm = lm_encoder(params, catalog.iloc[:1], tuned=params.seqhead.item_vectors == "tuned")
    return SeqHeadTower(params, model, LMTower(params, lm), table, unknown)

"""Evaluating SASRec and the sequence head: the histories they read and full ranking of their item vectors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..config import IndexConfig, Params
from ..data.settings import SettingData
from ..model.new_item_offsets import new_item_offsets, recent_flags
from ..model.sequence import SASRec, history_matrix, score_temperature, unknown_items
from .metrics import breakdown
from .ranking import ScoreFn, rank_rows, vector_scores


def sasrec_histories(rows: pd.DataFrame, data: SettingData, setting: str) -> list[np.ndarray]:
    """What SASRec reads for each eval row: the user's whole past in the setting, of which the model keeps the
    last `max_len` (the rows' `history` is only the LM's window). Per-domain settings see the target's domain."""
    if setting not in ("s2piao", "single_domain"):
        return list(rows["seen"])
    ranges = data.domain_ranges
    bounds = np.array([ranges[d] for d in rows["domain"]], dtype=np.int64).reshape(-1, 2)
    return [s[(s >= lo) & (s < hi)] for s, (lo, hi) in zip(rows["seen"], bounds)]


def served_scores(model: SASRec, users: torch.Tensor, items: torch.Tensor, histories: pd.Series,
                  cfg: IndexConfig) -> ScoreFn:
    """Scores as `llmrec serve` gives them: each user's new-item offset (model/new_item_offsets.py) added to every
    item the head has no ID embedding for, calibrated over every item's score as serving does for a catalogue up
    to its sample size."""
    plain = vector_scores(users, items)
    unknown = unknown_items(model)
    if not unknown.any():
        return plain
    recent, lengths = recent_flags(history_matrix(histories, cfg.new_item_offset_window), unknown)
    offsets = new_item_offsets(cfg, (users @ items.T).numpy(), unknown, recent, lengths, score_temperature(model))
    offsets, new = torch.from_numpy(offsets.astype(np.float32)), torch.from_numpy(unknown.astype(np.float32))

    def score(rows: np.ndarray, start: int, end: int) -> torch.Tensor:
        return plain(rows, start, end) + offsets[torch.from_numpy(rows)][:, None] * new[start:end]
    return score


def evaluate_sasrec(model: SASRec, rows: pd.DataFrame, data: SettingData, params: Params,
                    return_ranks: bool = False, served: IndexConfig | None = None):
    """Metrics of SASRec or the sequence head on `rows` (and the ranks, with `return_ranks`): each user vector is
    the last state over the user's past in the setting. `served`: the head as `llmrec serve` scores it, with that
    config's offset on the items it has no ID embedding for."""
    was_training = model.training
    model.eval()
    histories = pd.Series(sasrec_histories(rows, data, params.train.setting), dtype=object)
    users = model.user_vectors(history_matrix(histories, model.max_len))
    with torch.no_grad():
        items = model.item_vectors().detach().cpu()
        score = vector_scores(users, items) if served is None else served_scores(model, users, items, histories, served)
        ranks = rank_rows(params, score, rows, data)
    model.train(was_training)
    result = breakdown(rows, ranks, params.eval.ks)
    return (result, ranks) if return_ranks else result

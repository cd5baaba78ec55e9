"""Evaluating SASRec and the sequence head: the histories they read and full ranking of their item vectors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..config import Params
from ..data.settings import SettingData
from ..model.sequence import SASRec, history_matrix
from .metrics import breakdown
from .ranking import rank_rows, vector_scores


def sasrec_histories(rows: pd.DataFrame, data: SettingData, setting: str) -> list[np.ndarray]:
    """What SASRec reads for each eval row: the user's whole past in the setting, of which the model keeps the
    last `max_len` (the rows' `history` is only the LM's window). Per-domain settings see the target's domain."""
    if setting not in ("s2piao", "single_domain"):
        return list(rows["seen"])
    ranges = data.domain_ranges
    bounds = np.array([ranges[d] for d in rows["domain"]], dtype=np.int64).reshape(-1, 2)
    return [s[(s >= lo) & (s < hi)] for s, (lo, hi) in zip(rows["seen"], bounds)]


def evaluate_sasrec(model: SASRec, rows: pd.DataFrame, data: SettingData, params: Params,
                    return_ranks: bool = False):
    """Metrics of SASRec or the sequence head on `rows` (and the ranks, with `return_ranks`): each user vector is
    the last state over the user's past in the setting."""
    was_training = model.training
    model.eval()
    histories = pd.Series(sasrec_histories(rows, data, params.train.setting), dtype=object)
    users = model.user_vectors(history_matrix(histories, model.max_len))
    with torch.no_grad():
        ranks = rank_rows(params, vector_scores(users, model.item_vectors().detach().cpu()), rows, data)
    model.train(was_training)
    result = breakdown(rows, ranks, params.eval.ks)
    return (result, ranks) if return_ranks else result

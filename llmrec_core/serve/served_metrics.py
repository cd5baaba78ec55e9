"""Score a recommender exactly as `llmrec serve` answers: its index's item vectors, its tower's user vectors,
and the offset serving adds to items the model has no ID embedding for, on the prepared data's eval rows.

This is how two model versions are compared on one validation split whatever data each was trained on: an item
of the split that a version's index holds keeps that version's vector; one it never indexed is embedded from its
title by the version's tower, as `POST /items` would, and counts as new to it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..config import Params
from ..data.settings import SettingData
from ..evaluate.metrics import breakdown
from ..evaluate.ranking import rank_rows
from .recommend import Recommender


def catalogue_rows(recommender: Recommender, item_ids: pd.Series) -> np.ndarray:
    """Each item id's row in the recommender's index catalogue, -1 where the index does not hold it."""
    catalog = recommender.index.catalog
    lookup = pd.Series(np.arange(len(catalog)), index=catalog["item_id"].astype(str))
    lookup = lookup[~lookup.index.duplicated()]
    return lookup.reindex(item_ids.astype(str)).fillna(-1).to_numpy(dtype=np.int64)


def item_table(recommender: Recommender, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(vector, new to the model) for every prepared item, in the prepared item order."""
    rows = catalogue_rows(recommender, items["item_id"])
    indexed = rows >= 0
    stored = recommender.index.vectors()
    vectors = np.zeros((len(items), stored.shape[1]), dtype=np.float32)
    vectors[indexed] = stored[rows[indexed]]
    if (~indexed).any():
        vectors[~indexed] = recommender.tower.item_vectors(items.loc[~indexed, ["item_id", "domain", "title"]]
                                                           .reset_index(drop=True))
    new = np.ones(len(items), dtype=bool)
    tower_new = recommender.tower.unknown
    new[indexed] = tower_new[rows[indexed]] if tower_new is not None else False
    if tower_new is None:  # the LM ranks every item by its title alone: no item is new to it
        new[:] = False
    return vectors, new


def served_ranks(params: Params, recommender: Recommender, data: SettingData, rows: pd.DataFrame) -> np.ndarray:
    """Each eval row's 0-based target rank among its domain's items, scored as serving scores them."""
    vectors, new = item_table(recommender, data.items)
    rows_in_index = catalogue_rows(recommender, data.items["item_id"])
    items = data.items[["title", "domain"]].reset_index(drop=True)
    users, offsets = [], []
    for history in rows["history"]:
        history = np.asarray(history, dtype=np.int64)
        frame = items.iloc[history].reset_index(drop=True).assign(row=rows_in_index[history])
        vector = recommender.tower.user_vector(frame)
        users.append(vector[0])
        offsets.append(recommender.tower.new_item_offset(recommender.params.index, vector, frame))
    users_t = torch.from_numpy(np.asarray(users, dtype=np.float32).reshape(len(users), -1))
    items_t = torch.from_numpy(vectors)
    lift = torch.from_numpy(np.asarray(offsets, dtype=np.float32))[:, None] * torch.from_numpy(new.astype(np.float32))

    def score(row_ids: np.ndarray, start: int, end: int) -> torch.Tensor:
        picked = torch.from_numpy(row_ids)
        return users_t[picked] @ items_t[start:end].T + lift[picked, start:end]
    return rank_rows(params, score, rows, data)


def served_metrics(params: Params, recommender: Recommender, data: SettingData, rows: pd.DataFrame) -> dict:
    """Recall/NDCG@K and MRR of the served recommender on `rows`, overall and per domain and item group."""
    return breakdown(rows, served_ranks(params, recommender, data, rows), params.eval.ks)

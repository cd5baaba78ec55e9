"""Ranking and metrics against hand-computed cases."""
import math

import numpy as np
import torch

from llmrec_core.evaluate.metrics import metric_values
from llmrec_core.evaluate.ranking import full_ranks, sampled_ranks, top_k, vector_scores


def _scores(matrix):
    m = torch.tensor(matrix, dtype=torch.float32)
    return lambda rows, s, e: m[torch.from_numpy(rows), s:e]


def test_ranks_with_ties_count_against_the_target():
    score = _scores([[0.9, 0.5, 0.5, 0.1]])
    assert full_ranks(score, np.array([1]), None, {"d": (0, 4)}).tolist() == [2]  # tie with item 2
    assert full_ranks(score, np.array([0]), None, {"d": (0, 4)}).tolist() == [0]


def test_history_is_excluded_but_never_the_target():
    score = _scores([[0.9, 0.8, 0.5, 0.1], [0.9, 0.8, 0.5, 0.1]])
    hist = [np.array([0, 1]), np.array([0, 2])]
    ranks = full_ranks(score, np.array([2, 2]), hist, {"d": (0, 4)})
    assert ranks.tolist() == [0, 1]  # row 1: item 2 is both history and target; item 1 still beats it


def test_targets_rank_only_within_their_domain():
    score = _scores([[0.1, 0.2, 0.9, 0.95], [0.1, 0.2, 0.9, 0.95]])
    ranks = full_ranks(score, np.array([1, 2]), None, {"a": (0, 2), "b": (2, 4)})
    assert ranks.tolist() == [0, 1]


def test_metrics_hand_computed_and_k_larger_than_pool():
    m = metric_values(np.array([0, 1, 5]), ks=[1, 10])
    assert m["recall@1"] == 1 / 3 and m["recall@10"] == 1.0
    assert math.isclose(m["ndcg@10"], (1 + 1 / math.log2(3) + 1 / math.log2(7)) / 3)
    assert math.isclose(m["mrr"], (1 + 1 / 2 + 1 / 6) / 3)


def test_sampled_protocol_is_seeded_and_excludes_the_target():
    users, items = torch.eye(3, 8), torch.eye(8)
    score = vector_scores(users, items)
    a = sampled_ranks(score, np.array([0, 1, 2]), {"d": (0, 8)}, negatives=5, seed=3)
    b = sampled_ranks(score, np.array([0, 1, 2]), {"d": (0, 8)}, negatives=5, seed=3)
    assert a.tolist() == b.tolist() == [0, 0, 0]  # target scores 1, every negative 0


def test_top_k_excludes_history():
    score = _scores([[0.9, 0.8, 0.5, 0.1]])
    idx, _ = top_k(score, np.array([0]), 0, 4, k=2, exclude=[np.array([0])])
    assert idx.tolist() == [[1, 2]]

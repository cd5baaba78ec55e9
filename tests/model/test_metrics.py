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
    a = sampled_ranks(score, np.array([0, 1, 2]), None, {"d": (0, 8)}, negatives=5, seed=3)
    b = sampled_ranks(score, np.array([0, 1, 2]), None, {"d": (0, 8)}, negatives=5, seed=3)
    assert a.tolist() == b.tolist() == [0, 0, 0]  # target scores 1, every negative 0


def test_sampled_negatives_hand_computed_without_replacement_and_without_history():
    # target 0 scores 0.5; history items 1 and 2 score above it but are never negatives; the eligible
    # pool is {3: 0.6, 4: 0.4, 5: 0.7}. Two draws without replacement: {3,4} -> rank 1, {3,5} -> 2,
    # {4,5} -> 1, each with probability 1/3. With replacement {4,4} would give 0; with history, more.
    n = 3000
    score = _scores([[0.5, 0.9, 0.9, 0.6, 0.4, 0.7]] * n)
    hist = [np.array([1, 2])] * n
    ranks = sampled_ranks(score, np.zeros(n, dtype=np.int64), hist, {"d": (0, 6)}, negatives=2, seed=0)
    assert set(ranks.tolist()) == {1, 2}
    assert abs((ranks == 2).mean() - 1 / 3) < 0.04
    # one negative: item 4 (rank 0) a third of the time
    one = sampled_ranks(score, np.zeros(n, dtype=np.int64), hist, {"d": (0, 6)}, negatives=1, seed=0)
    assert set(one.tolist()) == {0, 1} and abs((one == 0).mean() - 1 / 3) < 0.04


def test_sampled_on_a_pool_smaller_than_the_sample_equals_full_ranking():
    rng = np.random.default_rng(0)
    ranges = {"one": (0, 1), "small": (1, 8), "large": (8, 60)}  # a one-item domain must not crash
    targets = np.concatenate([[0, 0], rng.integers(1, 8, 20), rng.integers(8, 60, 40)])
    hist = [rng.choice(60, size=rng.integers(0, 15), replace=False) for _ in targets]
    scores = torch.from_numpy(rng.normal(size=(len(targets), 60))).float()
    scores[:, 10] = scores[:, 11]  # ties count against the target in both protocols
    score = lambda rows, s, e: scores[torch.from_numpy(rows), s:e]  # noqa: E731
    full = full_ranks(score, targets, hist, ranges)
    sampled = sampled_ranks(score, targets, hist, ranges, negatives=1000, seed=1)
    assert sampled.tolist() == full.tolist()
    assert sampled[:2].tolist() == [0, 0]


def test_sampled_ranks_are_at_most_the_full_rank():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 200, 300)
    scores = torch.from_numpy(rng.normal(size=(300, 200))).float()
    score = lambda rows, s, e: scores[torch.from_numpy(rows), s:e]  # noqa: E731
    full = full_ranks(score, targets, None, {"d": (0, 200)})
    sampled = sampled_ranks(score, targets, None, {"d": (0, 200)}, negatives=50, seed=0)
    assert (sampled <= full).all() and sampled.mean() < full.mean() / 2


def test_top_k_excludes_history():
    score = _scores([[0.9, 0.8, 0.5, 0.1]])
    idx, _ = top_k(score, np.array([0]), 0, 4, k=2, exclude=[np.array([0])])
    assert idx.tolist() == [[1, 2]]

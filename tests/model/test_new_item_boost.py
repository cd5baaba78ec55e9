"""The serving boost of new items: which items it lifts, how it is chosen, and that serving applies it exactly."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec_core.config import IndexConfig, SasrecConfig
from llmrec_core.model.sasrec import build_head
from llmrec_core.new_item_boost import boosted, choose_boost
from llmrec_core.serve.index import ItemIndex
from llmrec_core.serve.recommend import Recommender
from llmrec_core.serve.towers import unknown_items


def _head(members: int, known: torch.Tensor | None, item_ids: bool = True):
    cfg = SasrecConfig(hidden=8, heads=2, layers=1, members=members)
    cfg = SimpleNamespace(**cfg.model_dump(), item_ids=item_ids, id_dropout=0.0)
    return build_head(6, cfg, torch.randn(6, 4), known)


def test_unknown_items_are_those_without_an_id_embedding():
    known = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    for members in (1, 3):
        assert unknown_items(_head(members, known)).tolist() == [False, False, True, False, True, False]
    assert not unknown_items(_head(1, None)).any()  # every item seen in training
    assert not unknown_items(_head(1, known, item_ids=False)).any()  # text only: nothing to lift


def test_boost_adds_to_unknown_columns_only():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    score = boosted(lambda rows, start, end: scores[rows][:, start:end], np.array([False, True, False, True]), 2.5)
    assert score(np.array([0, 1]), 1, 4).tolist() == [[4.5, 3.0, 6.5], [3.0, 0.5, 3.0]]


def _record(new_by_boost: dict[str, float]) -> dict:
    return {"boosts": {b: {"by_group": {"new": {"ndcg@10": v, "count": 5}}} for b, v in new_by_boost.items()}}


def test_choose_boost_is_the_smallest_that_reaches_the_reference_on_average():
    a = _record({"0": 0.01, "1": 0.02, "2": 0.05, "4": 0.09})
    b = _record({"0": 0.01, "1": 0.03, "2": 0.02, "4": 0.08})
    assert choose_boost([a, b], 0.025) == "1"  # (0.02 + 0.03) / 2 = 0.025 reaches it; "0" does not
    assert choose_boost([a, b], 0.03) == "2"  # 0.035
    assert choose_boost([a, b], 0.2) is None


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
@pytest.mark.parametrize("boost", [0.0, 0.3, 5.0, 100.0])
def test_serving_applies_the_boost_exactly(boost, kind):
    rng = np.random.default_rng(1)
    n = 400
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    catalog = pd.DataFrame({"item_id": [f"d:{i}" for i in range(n)], "domain": ["a"] * 200 + ["b"] * 200,
                            "title": [f"t{i}" for i in range(n)], "added": "prepared"})
    config = IndexConfig(kind=kind, hnsw_ef_construction=200, hnsw_ef_search=400, new_item_boost=boost)
    index = ItemIndex.build(vectors, catalog, {"tuned": False}, config)
    unknown = rng.random(n) < 0.1
    recommender = Recommender(SimpleNamespace(index=config), index, SimpleNamespace(unknown=unknown))
    user = rng.standard_normal((1, 8)).astype(np.float32)
    expected_all = user[0] @ vectors.T + boost * unknown
    for allowed in (None, np.arange(200, 400)):
        ids, scores = recommender._search(user, 15, allowed)
        pool = np.arange(n) if allowed is None else allowed
        best = pool[np.argsort(-expected_all[pool], kind="stable")[:15]]
        assert ids.tolist() == best.tolist()
        np.testing.assert_allclose(scores, expected_all[best], rtol=1e-5, atol=1e-5)
    if boost == 100.0:  # a boost beyond any score gap puts every unknown item first
        ids, _ = recommender._search(user, int(unknown.sum()), None)
        assert set(ids) == set(np.flatnonzero(unknown))

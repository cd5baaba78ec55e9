"""Serving at throughput answers as before: known users' events read once, their cached vectors never stale after
new items or a reload, and queries searched together answered exactly as each alone (exact index and HNSW)."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from llmrec_core.config import IndexConfig
from llmrec_core.serve.batcher import MicroBatcher
from llmrec_core.serve.index import ItemIndex
from llmrec_core.serve.known_users import KnownUsers, UserVectors
from llmrec_core.serve.recommend import Recommender, build_index, user_events
from llmrec_core.train.sequence import train_sasrec

HEAD = {"epochs": 1, "eval_every": 1, "hidden": 16, "heads": 2, "max_len": 10}


def _head_params(sample_prepared, tiny_bert, run: str, seed: int = 0, **index):
    params = sample_prepared(run, model={"name_or_path": str(tiny_bert)}, seqhead={**HEAD, "seed": seed},
                             index={"model": "seqhead", **index})
    train_sasrec(params, show_progress=False, head="seqhead")
    build_index(params, log=lambda m: None)
    return params


@pytest.fixture(scope="module")
def head(sample_prepared, tiny_bert):
    """A trained head serving with params.yaml's calibrated new-item offset, and a few items new to it."""
    params = _head_params(sample_prepared, tiny_bert, "throughput", new_item_offset=3.0, new_item_offset_calibration=True)
    recommender = Recommender.load(params)
    domain = recommender.domains[0]
    recommender.add(pd.DataFrame({"item_id": [f"{domain}:fresh-{i}" for i in range(3)], "domain": domain,
                                  "title": [f"Fresh arrival number {i}" for i in range(3)]}))
    return params


def _users(params, n: int) -> list[str]:
    return pd.read_parquet(params.data_root / "prepared" / "users.parquet")["user_id"].astype(str).tolist()[:n]


def _queries(recommender: Recommender, users: list[str]) -> list[dict]:
    """Known users with and without a domain and with several k; titles in and out of the catalogue."""
    titles = recommender.index.catalog["title"].tolist()
    queries = [{"user": u, "k": 3 + i % 5, "domain": recommender.domains[i % 2] if i % 3 == 0 else None}
               for i, u in enumerate(users)]
    queries += [{"history": [titles[7], "A title nobody wrote"], "k": 4},
                {"history": [titles[-1], titles[3]], "k": 6, "domain": recommender.domains[1]}]
    return queries


def _ask(recommender: Recommender, query: dict):
    history, items = recommender.recommend_records(query.get("user"), query.get("history"), query["k"],
                                                   query.get("domain"))
    return history, [r["item_id"] for r in items], np.array([r["score"] for r in items])


def _assert_same(together, alone):
    for (hist_t, ids_t, scores_t), (hist_a, ids_a, scores_a) in zip(together, alone):
        assert hist_t == hist_a and ids_t == ids_a
        np.testing.assert_allclose(scores_t, scores_a, atol=2e-4)  # scores are rounded to 4 decimals


def test_known_users_read_once_give_the_events_user_events_reads(head):
    known = KnownUsers.of(head)
    for user in _users(head, 25):
        np.testing.assert_array_equal(known.events(user), user_events(head, user))
    with pytest.raises(KeyError, match="unknown user"):
        known.events("nobody-at-all")


def test_a_cached_user_vector_is_keyed_by_its_history_and_bounded():
    cache = UserVectors(capacity=2)
    cache.put("a", np.array([1, 2]), np.ones((1, 4)))
    assert cache.get("a", np.array([1, 2])) is not None and cache.get("a", np.array([1, 3])) is None
    cache.put("b", np.array([5]), np.zeros((1, 4)))
    cache.get("a", np.array([1, 2]))  # a is now the most recently used
    cache.put("c", np.array([6]), np.zeros((1, 4)))
    assert len(cache) == 2 and cache.get("b", np.array([5])) is None and cache.get("a", np.array([1, 2])) is not None


def test_new_items_reach_a_cached_user_at_once(head):
    """The cache holds user vectors only: an item added after a user's vector was cached is ranked for them."""
    recommender = Recommender.load(head)
    user = _users(head, 1)[0]
    domain = recommender.domains[0]
    recommender.recommend_records(user, None, 5, domain)
    assert len(recommender._user_vectors) == 1
    window = recommender._known_users.events(user)[-recommender.tower.window:]
    hist = recommender.index.catalog.iloc[window][["title", "domain"]].assign(row=window)
    np.testing.assert_allclose(recommender._user_vectors.get(user, window), recommender.tower.user_vector(hist),
                               rtol=1e-6)
    (added,) = recommender.add(pd.DataFrame({"item_id": [f"{domain}:after-cache"], "domain": [domain],
                                             "title": ["An item added after the cache was filled"]}))
    # an offset above every score: the items new to the head in the domain come first, the one just added among them
    lifted = head.index.model_copy(update={"new_item_offset": 1e4, "new_item_offset_calibration": False})
    recommender.params = head.model_copy(update={"index": lifted})
    new_in_domain = recommender.tower.unknown & (recommender.index.catalog["domain"] == domain).to_numpy()
    _, items = recommender.recommend_records(user, None, int(new_in_domain.sum()), domain)
    assert recommender._user_vectors.hits >= 1
    assert {r["item_id"] for r in items} == set(recommender.index.catalog["item_id"].to_numpy()[new_in_domain])
    assert recommender.index.catalog["item_id"].iloc[added] in {r["item_id"] for r in items}


def test_a_reload_serves_the_new_weights_not_a_cached_vector(sample_prepared, tiny_bert):
    from llmrec_core.serve.http import Service

    params = _head_params(sample_prepared, tiny_bert, "throughput-reload")
    service = Service(params)
    users = _users(params, 5)
    before = [service.recommender.recommend_records(u, None, 10)[1] for u in users]
    assert len(service.recommender._user_vectors) == len(users)
    retrained = sample_prepared("throughput-reload", model={"name_or_path": str(tiny_bert)},
                                seqhead={**HEAD, "seed": 7}, index={"model": "seqhead"})
    (retrained.resolve(retrained.seqhead.run_dir) / "checkpoint.pt").unlink()  # start over, not resume
    train_sasrec(retrained, show_progress=False, head="seqhead")  # the same run folder, other weights
    build_index(retrained, log=lambda m: None)
    service.reload()
    fresh = Recommender.load(params)
    after = [service.recommender.recommend_records(u, None, 10)[1] for u in users]
    assert after == [fresh.recommend_records(u, None, 10)[1] for u in users]
    assert after != before


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_queries_searched_together_answer_exactly_as_alone(head, kind):
    loaded = Recommender.load(head)
    index = loaded.index
    if kind == "hnsw":
        index = ItemIndex.build(index.vectors(), index.catalog, index.meta, IndexConfig(kind="hnsw"))
    recommender = Recommender(head, index, loaded.tower)
    queries = _queries(recommender, _users(head, 30))
    alone = [_ask(recommender, q) for q in queries]
    assert recommender._batcher.largest == 1
    recommender._batcher.window_s = 0.5  # every query below arrives within the window: one batch
    start = threading.Barrier(len(queries))

    def together(query):
        start.wait()
        return _ask(recommender, query)

    with ThreadPoolExecutor(len(queries)) as pool:
        batched = list(pool.map(together, queries))
    assert recommender._batcher.largest > len(queries) // 2
    _assert_same(batched, alone)


def test_the_exact_batch_ranks_by_score_plus_offset_without_the_history(head):
    """Against a brute force over every item vector: score + the tower's offset for items new to it, history out."""
    recommender = Recommender.load(head)
    tower, catalog = recommender.tower, recommender.index.catalog
    assert tower.unknown.any()
    for user in _users(head, 10):
        _, ids, scores = _ask(recommender, {"user": user, "k": 10})
        seen = recommender._known_users.events(user)
        window = seen[-tower.window:]
        vector = tower.user_vector(catalog.iloc[window][["title", "domain"]].assign(row=window))
        offset = tower.new_item_offset(head.index, vector, pd.DataFrame({"row": window}))
        brute = (vector @ recommender.index.vectors().T)[0] + offset * tower.unknown
        brute[seen] = -np.inf
        top = np.argsort(-brute, kind="stable")[:10]
        assert ids == catalog["item_id"].iloc[top].tolist()
        np.testing.assert_allclose(scores, brute[top], atol=2e-4)


def test_the_batcher_hands_every_caller_its_batch_error_and_stops_when_idle():
    calls = []

    def run(items):
        calls.append(list(items))
        if "bad" in items:
            raise RuntimeError("broken batch")
        return [i * 2 for i in items]

    batcher = MicroBatcher(run, window_s=0.3, idle_s=0.2)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(batcher.submit, x) for x in ("bad", "a", "b")]
        errors = [f.exception() for f in futures]
    assert all(isinstance(e, RuntimeError) for e in errors) and len(calls) == 1
    assert batcher.submit("c") == "cc"  # the worker went on
    time.sleep(0.6)
    assert not batcher._running and not any(t.name == "batcher" for t in threading.enumerate())
    assert batcher.submit(3) == 6  # and starts again

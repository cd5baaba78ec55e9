"""Serving: the faiss index ranks like evaluation, recommendations exclude history, new items are found."""
import numpy as np
import pandas as pd
import pytest
import torch

from llmrec_core.config import IndexConfig
from llmrec_core.serve.index import ItemIndex, index_kind
from llmrec_core.serve.recommend import add_items, build_index, index_dir, load_index, recommend, user_events
from llmrec_core.train.sequence import train_sasrec
from llmrec_core.train.loop import train


def _catalog(n):
    return pd.DataFrame({"item_id": [f"d:{i}" for i in range(n)], "domain": ["a"] * (n // 2) + ["b"] * (n - n // 2),
                         "title": [f"t{i}" for i in range(n)], "added": "prepared"})


def test_index_search_equals_exact_topk_and_filters_domain(tmp_path):
    rng = np.random.default_rng(0)
    items = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((500, 16)).astype(np.float32)), dim=1)
    users = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((7, 16)).astype(np.float32)), dim=1)
    index = ItemIndex.build(items.numpy(), _catalog(500), {"tuned": False})
    index.save(tmp_path / "idx")
    index = ItemIndex.load(tmp_path / "idx")
    ids, _ = index.search(users.numpy(), 10)
    assert np.array_equal(ids, (users @ items.T).topk(10).indices.numpy())
    domain_b = np.arange(250, 500)
    ids_b, _ = index.search(users.numpy(), 10, allowed=domain_b)
    assert np.array_equal(ids_b, (users @ items[250:].T).topk(10).indices.numpy() + 250)
    with pytest.raises(ValueError, match="already indexed"):
        index.add(items[:1].numpy(), _catalog(1))


def test_index_kind_rule_follows_catalogue_size_unless_overridden():
    cfg = IndexConfig(exact_max_items=1000)
    assert index_kind(1000, cfg) == "exact" and index_kind(1001, cfg) == "hnsw"
    assert index_kind(10, cfg.model_copy(update={"kind": "hnsw"})) == "hnsw"
    assert index_kind(10**7, cfg.model_copy(update={"kind": "exact"})) == "exact"


def test_hnsw_index_finds_the_exact_neighbours_filters_domains_and_takes_new_items(tmp_path):
    rng = np.random.default_rng(1)
    n, dim = 4000, 32  # clustered, as text embeddings are
    centres = rng.standard_normal((40, dim))
    items = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, dim))
    items = (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)
    users = items[rng.integers(0, n, 50)] + 0.3 * rng.standard_normal((50, dim)).astype(np.float32)
    index = ItemIndex.build(items, _catalog(n), {"tuned": False}, IndexConfig(exact_max_items=1000))
    assert index.meta["kind"] == "hnsw"
    index.save(tmp_path / "idx")
    index = ItemIndex.load(tmp_path / "idx")
    exact = np.argsort(-(users @ items.T), axis=1)[:, :10]
    ids, scores = index.search(users, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    assert recall >= 0.95 and (np.diff(scores, axis=1) <= 1e-6).all()
    domain_b = np.arange(n // 2, n)
    ids_b, _ = index.search(users, 10, allowed=domain_b)
    exact_b = np.argsort(-(users @ items[n // 2:].T), axis=1)[:, :10] + n // 2
    assert np.isin(ids_b, domain_b).all()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids_b, exact_b)]) >= 0.95
    new = -items[:3]  # far from everything indexed: found only if really added
    added = index.add(new, _catalog(3).assign(item_id=["new:0", "new:1", "new:2"]))
    assert added.tolist() == [n, n + 1, n + 2]
    assert index.search(new, 1)[0].ravel().tolist() == added.tolist()


def test_recommend_for_a_known_user_excludes_history_and_detects_stale_index(tiny_bert, sample_prepared):
    params = sample_prepared("serve", model={"name_or_path": str(tiny_bert), "user_max_tokens": 48},
                             max_steps=3, batch_size=16, domain_negatives=1, max_examples_per_user=1)
    train(params, show_progress=False)
    build_index(params)
    users = pd.read_parquet(params.data_root / "prepared" / "users.parquet")
    user = str(users["user_id"].iloc[3])
    seen = user_events(params, user)
    short = params.model_copy(update={"prepare": params.prepare.model_copy(update={"max_history": 2})})
    hist, recs = recommend(short, user=user, k=15)  # the sentence: 2 titles; excluded: all seen items
    assert len(seen) > 2 and len(hist) == 2 and len(recs) == 15
    catalog = load_index(params).catalog
    assert list(hist["title"]) == list(catalog["title"].iloc[seen[-2:]])
    assert not set(recs["item_id"]) & set(catalog["item_id"].iloc[seen])
    _, everything_else = recommend(short, user=user, k=len(catalog))  # all that is left: no seen item
    assert set(everything_else["item_id"]) == set(catalog["item_id"]) - set(catalog["item_id"].iloc[seen])
    assert recs["score"].is_monotonic_decreasing
    _, only_books = recommend(params, user=user, k=5, domain="Books")
    assert (only_books["domain"] == "Books").all()
    with pytest.raises(KeyError):
        recommend(params, user="no-such-user")
    mixed = params.model_copy(update={"model": params.model.model_copy(update={"pretrained_mix": 0.5})})
    with pytest.raises(ValueError, match="pretrained_mix 0.0, not 0.5"):  # users would come from another LM
        recommend(mixed, user=user)
    weights = params.resolve(params.train.run_dir) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="rebuild"):
        recommend(params, user=user)


def test_new_items_are_recommendable_without_retraining(sample_prepared):
    params = sample_prepared("serve-new", max_steps=1)  # the real MiniLM, untuned
    build_index(params, zero_shot=True)
    new = pd.DataFrame({"item_id": ["Books:NEW1", "Books:NEW2"], "domain": ["Books", "Books"],
                        "title": ["Quantum Teapot Chronicles: Return to the Porcelain Nebula", "Gardening for Cats"]})
    ids = add_items(params, new)
    assert len(load_index(params).catalog) == ids[-1] + 1
    _, recs = recommend(params, history=["Quantum Teapot Chronicles: The Porcelain Nebula"], k=5)
    assert recs["item_id"].iloc[0] == "Books:NEW1"
    assert recs["added"].iloc[0] != "prepared"


def test_the_sequence_head_serves_like_it_evaluates_and_takes_new_items(tiny_bert, sample_prepared):
    from llmrec_core.evaluate.trained import load_sasrec
    from llmrec_core.model.sequence import history_matrix
    from llmrec_core.serve.recommend import Recommender

    params = sample_prepared("serve-seqhead", model={"name_or_path": str(tiny_bert)},
                             seqhead={"epochs": 1, "eval_every": 1, "hidden": 16, "heads": 2, "max_len": 10})
    train_sasrec(params, show_progress=False, head="seqhead")
    # no new-item offset (items other tests accepted into the shared sample are new to the head): ranked as evaluated
    params = params.model_copy(update={"index": params.index.model_copy(
        update={"model": "seqhead", "new_item_boost": 0.0, "new_item_calibration": False})})
    index = build_index(params)
    assert index.meta["model_kind"] == "seqhead" and index_dir(params).parent.name == "seqhead"
    users = pd.read_parquet(params.data_root / "prepared" / "users.parquet")
    user = str(users["user_id"].iloc[5])
    seen = user_events(params, user)
    recommender = Recommender.load(params)
    hist, recs = recommender.recommend(user=user, k=10)
    assert len(hist) == min(len(seen), 10)

    # what evaluation ranks: the head's user vector over the last max_len items against every item vector, minus
    # history (the index also holds new items that other tests accepted into the shared sample: candidates too)
    prepared = int((index.catalog["added"] == "prepared").sum())
    model = load_sasrec(params, prepared, "seqhead")
    np.testing.assert_allclose(index.vectors()[:prepared], model.item_vectors().detach().numpy(), atol=1e-5)
    user_vector = model.user_vectors(history_matrix(pd.Series([seen]), model.max_len))
    scores = (user_vector @ torch.from_numpy(index.vectors()).T)[0]
    scores[torch.from_numpy(seen)] = -float("inf")
    assert list(recs["item_id"]) == list(index.catalog["item_id"].iloc[scores.topk(10).indices.numpy()])

    new = pd.DataFrame({"item_id": ["Books:new-1"], "domain": ["Books"], "title": ["A brand new book"]})
    (added,) = recommender.add(new)
    assert recommender.tower.table.shape[0] == recommender.index.index.ntotal == len(index.catalog) + 1
    _, after = recommender.recommend(history=["A brand new book", "a title nobody has"], k=5)
    assert len(after) == 5 and "Books:new-1" not in set(after["item_id"])  # its own history is excluded
    # the new item has no ID embedding: index.new_item_boost lifts it (and any other new item) above every warm one
    assert recommender.tower.unknown[added] and not recommender.tower.unknown[:prepared].any()
    lift = params.index.model_copy(update={"new_item_boost": 1e4})
    lifted = Recommender(params.model_copy(update={"index": lift}), recommender.index, recommender.tower)
    books_new = np.flatnonzero(recommender.tower.unknown & (recommender.index.catalog["domain"] == "Books").to_numpy())
    _, top = lifted.recommend(history=["a title nobody has"], k=len(books_new) + 2, domain="Books")
    first = set(top["item_id"].iloc[:len(books_new)])
    assert "Books:new-1" in first and first == set(recommender.index.catalog["item_id"].iloc[books_new])
    # calibration: a user whose recent items are new gets a larger offset, the one new_item_offsets computes over
    # every item's score (a catalogue this small is not sampled)
    from llmrec_core.serve.new_item_offsets import new_item_offsets
    calibrated = params.index.model_copy(update={"new_item_calibration": True, "new_item_prior_strength": 2.0})
    unknown = recommender.tower.unknown
    warm_rows = recommender.index.catalog.iloc[np.flatnonzero(~unknown)[:4]][["title", "domain"]].assign(
        row=np.flatnonzero(~unknown)[:4])
    vector = recommender.tower.user_vector(warm_rows)
    new_rows = pd.DataFrame({"row": np.r_[np.flatnonzero(~unknown)[:2], added, -1]})  # -1: a title not in the catalogue
    warm_offset = recommender.tower.new_item_offset(calibrated, vector, warm_rows)
    new_offset = recommender.tower.new_item_offset(calibrated, vector, new_rows)
    expected = new_item_offsets(calibrated, vector @ recommender.tower.table.T, unknown, np.array([[0, 0, 1, 1]], bool),
                                np.array([4]), recommender.tower.temperature)
    assert new_offset > warm_offset and new_offset == pytest.approx(float(expected[0]), rel=1e-5)
    reloaded = Recommender.load(params)  # the new item was saved with the index
    assert reloaded.index.catalog["item_id"].iloc[added] == "Books:new-1"
    np.testing.assert_allclose(reloaded.tower.table[added], recommender.tower.table[added], atol=1e-6)
    with pytest.raises(ValueError, match="seqhead index, not llmrec"):
        load_index(params.model_copy(update={"index": params.index.model_copy(update={"model": "llmrec"})}).model_copy(
            update={"train": params.train.model_copy(update={"run_dir": params.seqhead.run_dir})}))


def test_a_head_over_the_tuned_lm_reads_its_title_vectors_and_encodes_new_items_with_it(tiny_bert, sample_prepared):
    import torch.nn.functional as F

    from llmrec_core.data.layout import DataLayout
    from llmrec_core.evaluate.trained import lm_weights_path
    from llmrec_core.model.bundle import save_weights
    from llmrec_core.train.loop import lm_bundle
    from llmrec_core.model.inference import encode_items
    from llmrec_core.evaluate.trained import load_sasrec
    from llmrec_core.serve.towers import seqhead_tower
    from llmrec_core.train.sequence import head_fingerprint

    params = sample_prepared("seqhead-tuned", model={"name_or_path": str(tiny_bert)},
                             seqhead={"epochs": 1, "eval_every": 1, "hidden": 16, "heads": 2, "max_len": 10,
                                      "item_vectors": "tuned"})
    with pytest.raises(FileNotFoundError, match="run `llmrec train`"):  # no fine-tuned LM yet
        train_sasrec(params, show_progress=False, head="seqhead")
    items = pd.read_parquet(DataLayout(params.data_root).prepared / "items.parquet")

    def fine_tune(seed: int) -> torch.Tensor:
        """Stands in for `llmrec train`: the pre-trained LM with moved weights, saved where the LM's go."""
        bundle = lm_bundle(params, items, tuning="fpft")
        torch.manual_seed(seed)
        with torch.no_grad():
            for weight in bundle.encoder.parameters():
                weight.add_(0.05 * torch.randn_like(weight))
        lm_weights_path(params).parent.mkdir(parents=True, exist_ok=True)
        save_weights(bundle.encoder, lm_weights_path(params))
        return encode_items(bundle, len(items), 64)

    tuned = fine_tune(0)
    untuned = lm_bundle(params, items, tuning="fpft")
    pretrained = encode_items(untuned, len(items), 64)
    train_sasrec(params, show_progress=False, head="seqhead")
    head = load_sasrec(params, len(items), "seqhead")
    torch.testing.assert_close(head.text, F.normalize(tuned, dim=-1), atol=1e-5, rtol=0)
    assert not torch.allclose(head.text, F.normalize(pretrained, dim=-1), atol=1e-2)

    # a new title reaches the head through the same fine-tuned LM: here, catalogue titles read as if they were new
    tower = seqhead_tower(params, len(items), items)
    with torch.no_grad():
        expected = head.text_proj(head.text[:3]).numpy()
    np.testing.assert_allclose(tower.item_vectors(items.iloc[:3]), expected, atol=1e-4)

    before = head_fingerprint(params, "seqhead")
    fine_tune(1)  # the LM is trained again: the head trained on the old one is stale
    assert head_fingerprint(params, "seqhead") != before

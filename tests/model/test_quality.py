"""A small real model on a small dataset must beat popularity (the method works end to end)."""
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.settings import load_setting
from llmrec_core.evaluate.metrics import breakdown
from llmrec_core.evaluate.run import evaluate_encoder, popularity_scores, rank_rows, select_rows
from llmrec_core.model.bundle import load_weights
from llmrec_core.train.loop import lm_bundle
from llmrec_core.train.loop import train


def test_briefly_tuned_minilm_beats_popularity_on_the_sample(sample_prepared):
    params = sample_prepared("quality", max_steps=12, batch_size=16, domain_negatives=2, max_examples_per_user=2,
                             model={"user_max_tokens": 64})
    params = params.model_copy(update={"eval": params.eval.model_copy(update={"max_valid_users": 100})})
    train(params, show_progress=False)
    data = load_setting(DataLayout(params.data_root).prepared, "mixed")
    bundle = lm_bundle(params, data.items)
    load_weights(bundle.encoder, params.resolve(params.train.run_dir) / "weights.safetensors")
    tuned = evaluate_encoder(params, bundle, data, "test", max_users=400)["overall"]
    rows = select_rows(data, "test", 400, params.eval.seed)
    popular = breakdown(rows, rank_rows(params, popularity_scores(data), rows, data), params.eval.ks)["overall"]
    assert tuned["count"] == popular["count"] == 400
    assert tuned["recall@10"] > popular["recall@10"] and tuned["ndcg@10"] > popular["ndcg@10"]


def _sample_themes() -> dict[str, str]:
    """item_id -> the theme the sample generator wrote into the item's categories (data/sample/meta_*.json.gz)."""
    import gzip
    import json
    from pathlib import Path

    themes = {}
    for path in (Path(__file__).resolve().parents[2] / "data" / "sample").glob("meta_*.json.gz"):
        domain = path.name.removeprefix("meta_").removesuffix(".json.gz")
        for line in gzip.open(path, "rt"):
            try:
                record = json.loads(line)
                themes[f"{domain}:{record['asin']}"] = record["category"][1]
            except (ValueError, KeyError, IndexError):  # the sample's deliberately bad records
                continue
    return themes


def test_the_served_head_answers_a_space_opera_history_with_space_opera(sample_prepared):
    """A behavioural check of what users see (the README's example request): the sequence head over MiniLM's title
    vectors, served from its index, recommends the sample's space-opera items first for a space-opera history."""
    from llmrec_core.serve.recommend import Recommender, build_index
    from llmrec_core.train.sequence import train_sasrec

    params = sample_prepared("quality-head", seqhead={"epochs": 6, "eval_every": 2, "hidden": 32, "heads": 2,
                                                      "max_len": 20, "id_dropout": 0.0})
    params = params.model_copy(update={"index": params.index.model_copy(update={"model": "seqhead"})})
    train_sasrec(params, show_progress=False, head="seqhead")
    build_index(params, log=lambda m: None)
    history = ["Cold Galaxy (Cold Mars Book 1)", "Eclipse of Andromeda (DVD)", "Songs from Titan"]
    hist, recs = Recommender.load(params).recommend(history=history, k=5)
    assert hist["in_catalog"].all()
    themes = _sample_themes()
    found = [themes.get(item) for item in recs["item_id"]]
    assert sum(theme == "Space" for theme in found) >= 4, list(zip(recs["title"], found))

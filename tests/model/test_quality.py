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

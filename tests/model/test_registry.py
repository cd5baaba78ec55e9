"""Champion and challenger: versions, the gate, promote and rollback, on a real (tiny) sequence head."""
import json

import pandas as pd

import pytest
from safetensors.torch import load_file, save_file

from llmrec_core.registry import ModelRegistry, RegistryError, decide, serving_params


def test_the_gate_promotes_only_a_candidate_not_worse_than_the_champion():
    assert decide(0.10, None, 0.0, "ndcg@10")[0]  # nothing serves yet
    assert decide(0.20, 0.20, 0.0, "ndcg@10")[0]  # a tie is not worse
    assert not decide(0.19, 0.20, 0.0, "ndcg@10")[0]
    assert decide(0.19, 0.20, 0.02, "ndcg@10")[0]  # within the tolerance
    kept, reason = decide(0.10, 0.20, 0.05, "ndcg@10")
    assert not kept and "0.1000 < champion's 0.2000" in reason and "champion keeps serving" in reason


@pytest.fixture(scope="module")
def head_run(tiny_bert, sample_prepared, tmp_path_factory):
    """A trained head with its index, and a registry of its own."""
    from llmrec_core.serve.recommend import build_index
    from llmrec_core.train.sequence import train_sasrec

    params = sample_prepared("registry", model={"name_or_path": str(tiny_bert)},
                             seqhead={"epochs": 2, "eval_every": 1, "hidden": 16, "heads": 2, "max_len": 10})
    registry = tmp_path_factory.mktemp("registry")
    params = params.model_copy(update={
        "index": params.index.model_copy(update={"model": "seqhead", "new_item_offset": 0.0,
                                                 "new_item_offset_calibration": False}),
        "registry": params.registry.model_copy(update={"dir": registry, "max_valid_users": 300})})
    train_sasrec(params, show_progress=False, head="seqhead")
    build_index(params, log=lambda m: None)
    return params


def _break_head(params) -> None:
    """A deliberately broken candidate: the head's user vectors point the other way, so it ranks best last."""
    from llmrec_core.serve.recommend import build_index

    path = params.resolve(params.seqhead.run_dir) / "weights.safetensors"
    state = load_file(path)
    state["norm.weight"] = -state["norm.weight"]
    state["norm.bias"] = -state["norm.bias"]
    save_file(state, path)
    build_index(params, log=lambda m: None)  # the index is bound to the weights it was built from


def test_a_worse_candidate_is_registered_but_the_champion_keeps_serving(head_run):
    from llmrec_core.promotion import register_candidate

    first = register_candidate(head_run)
    assert first.promoted and first.reason == "no champion yet" and first.candidate > 0
    registry = ModelRegistry(head_run)
    assert registry.champion().number == first.version
    served, version = serving_params(head_run)
    assert version.number == first.version and served.seqhead.run_dir == version.folder / "seqhead"
    assert (version.folder / "seqhead" / "weights.safetensors").is_file()
    assert (version.folder / "seqhead" / "index" / "items.faiss").is_file()

    again = register_candidate(head_run)  # the pipeline ran again and changed nothing
    assert again.version == first.version and not again.promoted and "nothing new to register" in again.reason
    assert [v.number for v in registry.versions()] == [first.version]

    _break_head(head_run)
    second = register_candidate(head_run)
    assert not second.promoted and second.champion == pytest.approx(first.candidate)
    assert second.candidate < first.candidate and "champion keeps serving" in second.reason
    assert registry.champion().number == first.version  # still the first
    tags = registry.get(second.version).tags
    assert tags["decision"] == "kept champion" and tags["reason"] == second.reason
    assert tags["data_version"] == registry.get(first.version).tags["data_version"]
    log = [json.loads(line) for line in (registry.dir / "decisions.jsonl").read_text().splitlines()]
    assert {"event": "register", "version": second.version, "promoted": False} .items() <= log[-1].items()

    # by hand: promote the second, then roll back to the first; a running server answers with each after a reload
    from fastapi.testclient import TestClient

    from llmrec_core.serve.http import create_app

    history = {"history": ["The Frontier Chronicles: Titan", "Cold Galaxy (Cold Mars Book 1)"], "k": 5}
    token = "registry-test-token-0123456789"
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(head_run, token)) as client:
        assert client.get("/healthz").json()["version"] == first.version
        served_first = client.post("/recommend", json=history).json()["items"]
        assert registry.promote(second.version).number == second.version
        assert serving_params(head_run)[1].number == second.version
        assert client.post("/reload", headers=auth).json()["version"] == second.version
        assert client.post("/recommend", json=history).json()["items"] != served_first  # the broken head answers
        assert registry.rollback().number == first.version
        assert serving_params(head_run)[1].number == first.version
        health = client.post("/reload", headers=auth).json()
        assert health["version"] == first.version and health["model_kind"] == "seqhead"
        assert client.post("/recommend", json=history).json()["items"] == served_first
    with pytest.raises(RegistryError, match="no model version 99"):
        registry.promote(99)


def test_rollback_with_nothing_before_says_so(tmp_path, head_run):
    fresh = head_run.model_copy(update={"registry": head_run.registry.model_copy(update={"dir": tmp_path / "r"})})
    with pytest.raises(RegistryError, match="no earlier champion"):
        ModelRegistry(fresh).rollback()
    assert serving_params(fresh) == (fresh, None)  # no registry yet: the run folders serve


def test_served_scores_rank_like_the_evaluator(head_run, tmp_path):
    """Scored as it serves (its index, its tower), a head with no offset ranks the split like `llmrec evaluate`."""
    from llmrec_core.data.layout import DataLayout
    from llmrec_core.data.settings import load_setting
    from llmrec_core.evaluate.ranking import select_rows
    from llmrec_core.evaluate.run import evaluate
    from llmrec_core.serve.recommend import Recommender
    from llmrec_core.serve.served_metrics import served_ranks

    params = head_run.model_copy(update={"train": head_run.train.model_copy(update={"run_dir": tmp_path})})
    data = load_setting(DataLayout(params.data_root).prepared, "mixed")
    rows = select_rows(data, "valid", None, params.eval.seed)
    ranks = served_ranks(params, Recommender.load(params), data, rows)  # candidates: the split's items only
    evaluate(params, ("seqhead",), "valid")
    expected = pd.read_parquet(tmp_path / "ranks_valid.parquet")["rank_seqhead"].to_numpy()
    assert (ranks == expected).mean() > 0.99


def test_the_head_evaluated_as_served_ranks_like_the_server(head_run, tmp_path):
    """`seqhead_served` (the evaluator, with the new-item offset) and the served recommender rank the test split
    alike; the offset moves only targets the head has no ID embedding for."""
    from llmrec_core.data.layout import DataLayout
    from llmrec_core.data.settings import load_setting
    from llmrec_core.evaluate.ranking import select_rows
    from llmrec_core.evaluate.run import evaluate
    from llmrec_core.evaluate.trained import load_sasrec
    from llmrec_core.model.sequence import unknown_items
    from llmrec_core.serve.recommend import Recommender, build_index
    from llmrec_core.serve.served_metrics import served_ranks

    # a head that lacks ID embeddings for a fifth of the items, as if they were new since its training
    head_dir = tmp_path / "seqhead"
    head_dir.mkdir()
    state = load_file(head_run.resolve(head_run.seqhead.run_dir) / "weights.safetensors")
    state["known"][: len(state["known"]) // 5] = 0.0
    save_file(state, head_dir / "weights.safetensors")
    index = head_run.index.model_copy(update={"new_item_offset": 2.0, "new_item_offset_calibration": True})
    params = head_run.model_copy(update={"index": index,
                                         "train": head_run.train.model_copy(update={"run_dir": tmp_path}),
                                         "seqhead": head_run.seqhead.model_copy(update={"run_dir": head_dir})})
    build_index(params, log=lambda m: None)
    data = load_setting(DataLayout(params.data_root).prepared, "mixed")
    unknown = unknown_items(load_sasrec(params, len(data.items), "seqhead"))
    assert unknown.sum() == len(unknown) // 5
    evaluate(params, ("seqhead", "seqhead_served"), "test")
    ranks = pd.read_parquet(tmp_path / "ranks_test.parquet")
    new_target = unknown[ranks["target"].to_numpy()]
    moved = ranks["rank_seqhead_served"] != ranks["rank_seqhead"]
    assert moved.any() and (ranks.loc[new_target, "rank_seqhead_served"] <= ranks.loc[new_target, "rank_seqhead"]).all()
    rows = select_rows(data, "test", None, params.eval.seed)
    served = served_ranks(params, Recommender.load(params), data, rows)
    assert (served == ranks["rank_seqhead_served"].to_numpy()).mean() > 0.99

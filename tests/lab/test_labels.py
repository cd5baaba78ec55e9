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


def test_every_model_a_run_can_evaluate_has_a_label_in_the_report():
    from typing import get_args

    from lab.report.labels import MODEL_LABELS
    from llmrec_core.config import Model

    assert set(get_args(Model)) <= set(MODEL_LABELS)

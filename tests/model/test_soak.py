"""The short soak: a real `llmrec serve` killed with SIGKILL at random moments under concurrent /recommend,
POST /items and POST /reload loses no item it answered with 200 (benchmarks/bench_soak.py runs it for minutes)."""
from llmrec_core.serve.recommend import build_index
from tests.soak import soak


def test_a_server_killed_at_random_under_load_loses_no_acknowledged_item(sample_prepared, tiny_bert, tmp_path):
    params = sample_prepared("soak", model={"name_or_path": str(tiny_bert), "user_max_tokens": 48,
                                            "item_max_tokens": 16})
    build_index(params, zero_shot=True)
    figures = soak(params.base_dir / "params-soak.yaml", duration_s=0, kill_after_s=(1.5, 3.5),
                   log_path=tmp_path / "serve.log", seed=1, min_kills=1)
    assert figures["kills_under_load"] == 1 and figures["items_acknowledged"] > 0, figures
    assert figures["missing"]["lost"] == [] and figures["missing"]["logged_more_than_once"] == [], figures["missing"]
    assert figures["unexpected_answer_count"] == 0, figures["unexpected_answers"]

"""Section 8's tables of the registered claims' runs: every model by item group, and what serving costs on new items."""
from types import SimpleNamespace

import numpy as np
import pandas as pd

from lab.report.sections_items import claims_runs_by_group


def _run(ranks: dict[str, list[int]], groups: list[str], time_split=None) -> SimpleNamespace:
    table = pd.DataFrame({"user_idx": np.arange(len(groups)) // 2, "target": np.arange(len(groups)),
                          "domain": "d", "group": groups, **{f"rank_{m}": r for m, r in ranks.items()}})
    return SimpleNamespace(ranks=table, time_split=time_split, has=lambda m: f"rank_{m}" in table)


def _report(experiments: dict, time_experiments: dict, served: str = "seqhead") -> SimpleNamespace:
    return SimpleNamespace(experiments=experiments, time_experiments=time_experiments,
                           base=SimpleNamespace(index=SimpleNamespace(model=served)))


def test_each_claim_experiment_with_several_models_gets_its_groups_and_the_time_split_its_serving_cost():
    groups = ["tail", "tail", "head", "head"]
    confirm = [_run({"seqhead": [0, 20, 0, 0], "sasrec": [20, 20, 0, 20]}, groups) for _ in range(2)]
    lora = [_run({"llmrec": [0, 0, 0, 0]}, groups)]  # one model: no table
    new_groups = ["new", "new", "tail", "head"]
    window = [_run({"llmrec": [0, 0, 20, 20], "seqhead_served": [20, 20, 0, 0], "seqhead": [20, 20, 0, 0]},
                   new_groups, time_split={"test_rows": 4, "test_groups": {"new": 2}})]
    text = "\n".join(claims_runs_by_group(_report({"confirm": confirm, "confirm-lora": lora},
                                                  {"confirm-new-items": window})))
    assert "`confirm` (2 seeds; a registered claim's runs)" in text
    assert "| group | targets | LLM-Rec seq head | SASRec |" in text
    assert "| tail | 2 | 0.5000 ± 0.0000 | 0.0000 ± 0.0000 |" in text  # rank 0 scores 1, rank 20 scores 0
    assert "| head | 2 | 1.0000 ± 0.0000 | 0.5000 ± 0.0000 |" in text
    assert "`confirm-lora`" not in text and "| cold |" not in text
    assert "| group | targets | LLM-Rec | LLM-Rec seq head | LLM-Rec seq head, as served |" in text
    assert "| new | 2 | 1.0000 | 0.0000 | 0.0000 |" in text
    assert ("on new targets the LM alone scores 1.0000 and the head as it serves 0.0000; on warm targets 0.0000 "
            "and 1.0000; over the whole window 0.5000 and 0.5000") in text
    assert "No single scoring here keeps both leads; `index.model: seqhead` serves, giving up 1.0000 NDCG@10 " \
           "on new targets for +0.0000 over the whole window." in text
    lm_serves = "\n".join(claims_runs_by_group(_report({}, {"confirm-new-items": window}, served="llmrec")))
    assert "`index.model: llmrec` serves, giving up 1.0000 NDCG@10 on warm targets for +0.0000" in lm_serves
    window[0].ranks["rank_seqhead_served"] = 0  # a head that leads everywhere
    text = "\n".join(claims_runs_by_group(_report({}, {"confirm-new-items": window})))
    assert "The served head keeps both leads." in text

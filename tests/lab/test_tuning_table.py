"""The report's table of a validation grid (`llmrec-lab tune-heads`): the point in use, the best, goal 1's rule."""
from types import SimpleNamespace

from llmrec_core.config import SeqHeadConfig
from lab.report.labels import seed_spread, tuning_table


def _params(**seqhead) -> SimpleNamespace:
    return SimpleNamespace(seqhead=SeqHeadConfig(**seqhead))


def _tuning(best_hidden: int) -> dict:
    points = [{"seqhead.hidden": h, "seqhead.dropout": 0.2, "epochs_run": 10, "valid_recall@10": 0.5,
               "valid_ndcg@10": 0.30 if h == best_hidden else 0.29} for h in (64, 128)]
    return {"model": "seqhead", "experiment": "seqhead-tuned-lm.seed0", "grid": {"seqhead.hidden": [64, 128],
            "seqhead.dropout": [0.2]}, "points": points, "points_total": 3,
            "best": max(points, key=lambda p: p["valid_ndcg@10"]), "machine": {"date": "2026-11-27", "load_1min": 1.9}}


def test_the_row_in_use_is_marked_and_a_better_point_is_named():
    lines = tuning_table(_tuning(best_hidden=128), _params(hidden=64, dropout=0.2), "the head's values")
    text = "\n".join(lines)
    rows = [line for line in text.splitlines() if line.startswith(("| 64", "| 128"))]
    assert rows[0].endswith("| yes |") and rows[1].endswith("| no |")
    assert "on top of run `seqhead-tuned-lm.seed0`" in text and "2 of 3 grid points run" in text
    assert "validation split (`llmrec-lab" in text  # a grid that does not record its params file names none
    tuning = {**_tuning(best_hidden=128), "params": "configs/ml-100k.yaml"}
    assert "validation split of `configs/ml-100k.yaml` (" in "\n".join(tuning_table(tuning, _params(), "x"))
    assert "(hidden 128, dropout 0.2) is not the one in use" in text


def test_no_warning_when_the_best_point_is_in_use_and_nothing_without_a_grid():
    lines = tuning_table(_tuning(best_hidden=64), _params(hidden=64, dropout=0.2), "the head's values")
    assert not any("not the one in use" in line for line in lines)
    assert tuning_table(None, _params(), "x") == []


def test_goal_rule_takes_the_worse_of_the_overall_and_tail_margins_to_sasrec():
    tuning = _tuning(best_hidden=128)  # 128: overall 0.30, tail 0.15; 64: overall 0.29, tail 0.21
    tuning["points"][0]["valid_tail_ndcg@10"], tuning["points"][1]["valid_tail_ndcg@10"] = 0.21, 0.15
    sasrec = {"valid_ndcg@10": 0.295, "valid_tail_ndcg@10": 0.20}
    text = "\n".join(tuning_table(tuning, _params(hidden=128, dropout=0.2), "x", sasrec))
    # 64: min(0.29 - 0.295, 0.21 - 0.20) = -0.005; 128: min(+0.005, -0.05) = -0.05: the rule picks 64
    assert "| -0.0050 |" in text and "| -0.0500 |" in text
    assert "picks hidden 64, dropout 0.2: -0.0050" in text
    # without tail numbers there is no rule to apply
    del tuning["points"][0]["valid_tail_ndcg@10"]
    assert "picks" not in "\n".join(tuning_table(tuning, _params(), "x", sasrec))


def test_a_grid_over_another_section_reads_that_section_of_the_params_in_use():
    points = [{"model.pretrained_mix": mix, "epochs_run": 10, "valid_recall@10": 0.5, "valid_ndcg@10": 0.3 + mix / 10}
              for mix in (0, 0.5)]
    tuning = {"model": "seqhead", "grid": {"model.pretrained_mix": [0, 0.5]}, "points": points,
              "best": points[1], "machine": {"date": "2026-11-27"}}
    lines = tuning_table(tuning, SimpleNamespace(model=SimpleNamespace(pretrained_mix=0.0)), "x")
    rows = [line for line in "\n".join(lines).splitlines() if line.startswith("| 0")]
    assert rows[0].endswith("| yes |") and rows[1].endswith("| no |")
    assert any("(pretrained_mix 0.5) is not the one in use" in line for line in lines)


def test_a_seed_grid_is_shown_as_a_spread_against_the_experiments_seeds_not_as_a_choice():
    points = [{"seqhead.seed": seed, "epochs_run": 20, "valid_ndcg@10": value, "valid_tail_ndcg@10": 0.2}
              for seed, value in ((1, 0.30), (2, 0.32))]
    tuning = {"model": "seqhead", "experiment": "x.seed0", "grid": {"seqhead.seed": [1, 2]}, "points": points,
              "best": points[1], "machine": {"date": "2026-11-27"}}

    def run(seed: int, valid: float) -> SimpleNamespace:
        metrics = {"models": {"seqhead": {"overall": {"ndcg@10": valid}, "by_group": {"tail": {"ndcg@10": 0.1}}}}}
        return SimpleNamespace(name=f"x.seed{seed}", params=_params(seed=seed), valid_metrics=metrics,
                               valid_ndcg=lambda model: valid)

    text = "\n".join(seed_spread(tuning, [run(0, 0.31), run(1, 0.27), run(2, 0.29)]))
    # head seeds over x.seed0's LM: 0.31 (the run), 0.30, 0.32: mean 0.31, sd 0.01; the experiment's: 0.29, 0.02
    assert "0.3100 ± 0.0100 over 3" in text and "0.2900 ± 0.0200 over 3" in text
    assert "| 0 | – | 0.3100 | 0.1000 | run `x.seed0` |" in text and "| 2 | 20 | 0.3200 | 0.2000 | grid |" in text
    assert "not the one in use" not in text
    assert seed_spread(_tuning(best_hidden=64), []) == []


def test_an_ensemble_heads_budget_names_its_networks():
    from lab.report.collect import Arm
    from lab.report.labels import budget_text

    cost = {"epochs_run": 20, "targets_per_epoch": 80470, "max_len": 50}

    def arm(members: int) -> Arm:
        run = SimpleNamespace(training_cost=lambda model: cost, params=_params(members=members))
        return Arm.of("head", "seqhead", [run])

    assert budget_text(arm(4)).startswith("4 networks × 20 epochs")
    assert "networks" not in budget_text(arm(1))

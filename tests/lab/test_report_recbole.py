"""The report's RecBole side by side (three arms) and ml-1m sanity check read from their JSON files."""
from lab.report.sections_runs import ml1m_sanity, recbole_arms


def _arm(batch, updates, best, ndcg, **extra):
    return {"batch_size": batch, "updates_per_epoch": updates, "best_epoch": best, "epochs_run": best + 10,
            "seconds_per_epoch": 2.5, "fit_seconds": 100.0, "best_valid_ndcg@10": 0.1, "max_epochs": 300,
            "test": {"ndcg@10": ndcg, "recall@10": 0.2, "mrr@10": 0.07}, "load_average_1min_before": 1.5, **extra}


def test_the_three_arms_are_tabled_and_an_absent_one_is_said_not_run():
    r = {"dataset": "d", "protocol": "p", "capped": [], "machine": {"machine": "x86_64", "cpu_threads": 2, "cpus": 2},
         "recbole_defaults": {"train_batch_size": 2048, "hidden_dropout_prob": 0.5},
         "recbole_required": {"train_neg_sample_args": None, "valid_metric": "NDCG@10"},
         "arms": {"ours": _arm(128, 19, 30, 0.11, config={"dropout": 0.5, "batch_size": 128},
                               test_history_excluded={"ndcg@10": 0.115}),
                  "recbole_defaults": _arm(2048, 48, 12, 0.09, test_history_excluded={"ndcg@10": 0.125,
                                                                                      "recall@10": 0.25})}}
    text = "\n".join(recbole_arms("recbole_cpu", r))
    assert "| llmrec SASRec (the params file's `sasrec`) | 128 | 19 | 30 | 40 | 2.50 | – | 100 | 0.1000 | 0.1100 |" in text
    assert "| RecBole SASRec, its defaults | 2,048 | 48 | 12 | 22 | 2.50 | – |" in text
    assert "the median, from each epoch's recorded seconds" not in text
    assert "| 0.0900 | 0.2000 | 0.0700 | 0.1250 | 0.2500 |" in text  # its protocol, then earlier items excluded
    assert "Not run: RecBole SASRec, batch for our updates per epoch." in text
    assert "Not finished yet: RecBole SASRec, batch for our updates per epoch (`make bench-recbole` goes on" in \
        "\n".join(recbole_arms("s", {**r, "pending": ["recbole_matched"]}))
    assert "train_batch_size 2048, hidden_dropout_prob 0.5" in text
    assert "| 0.1100 | 0.2000 | 0.0700 | 0.1150 | – |" in text  # ours: its Recall@10 without history not given
    assert "Stopped by its epoch cap" not in text
    assert "Killed and resumed" not in text
    r["arms"]["recbole_defaults"]["resumed_after_epochs"] = [7, 15]
    assert "Killed and resumed from the last finished epoch" in "\n".join(recbole_arms("s", r))
    assert "recbole_defaults after epoch 7, 15." in "\n".join(recbole_arms("s", r))
    assert "torch threads" not in text
    r["arms"]["recbole_defaults"]["threads_from_epoch"] = [[0, 2], [7, 1]]
    assert "(after epoch: threads): recbole_defaults 0: 2, 7: 1." in "\n".join(recbole_arms("s", r))
    r["arms"]["recbole_defaults"]["epoch_seconds"] = [160.0, 170.0, 1200.0, 165.0]  # one epoch under load
    text = "\n".join(recbole_arms("s", r))
    assert "| RecBole SASRec, its defaults | 2,048 | 48 | 12 | 22 | 2.50 | 168 |" in text
    assert "the median, from each epoch's recorded seconds, reads through them" in text
    assert "- Read (one run per arm" not in text  # two arms of three: nothing to read yet
    r["arms"]["recbole_matched"] = _arm(5077, 19, 11, 0.12, test_history_excluded={"ndcg@10": 0.18})
    text = "\n".join(recbole_arms("s", r))
    assert "at our updates per epoch +0.0100 / +0.0650; at its defaults (48 updates per epoch against our 19, " \
           "best epoch 12) -0.0200 / +0.0100" in text
    assert "the implementations are more than 0.01 of each other" in text
    assert "lifts ours 1.05x, RecBole at its defaults 1.39x, RecBole matched 1.50x." in text  # ours barely: no reading
    r["arms"]["recbole_matched"] = _arm(5077, 19, 11, 0.115, test_history_excluded={"ndcg@10": 0.12})
    r["arms"]["ours"]["test_history_excluded"]["ndcg@10"] = 0.125
    text = "\n".join(recbole_arms("s", r))
    assert "the implementations are within 0.01 of each other under both protocols" in text
    assert "RecBole matched 1.04x." in text and "the lift is the protocol's" not in text
    r["arms"]["recbole_matched"]["test_history_excluded"]["ndcg@10"] = 0.15
    r["arms"]["ours"]["test_history_excluded"]["ndcg@10"] = 0.16
    assert "so the lift is the protocol's, not a weakness of ours" in "\n".join(recbole_arms("s", r))
    r["capped"] = ["recbole_defaults"]
    assert "Stopped by its epoch cap, not by early stopping: recbole_defaults" in "\n".join(recbole_arms("s", r))


def test_the_ml1m_line_is_not_run_without_its_file_and_beside_the_published_figure_with_it():
    assert "not run (`make bench-recbole-ml1m`)" in "\n".join(ml1m_sanity({"recbole_cpu": {}}))
    published = {"source": "src", "protocol": "proto", "best": {"learning_rate": 0.0005, "ndcg@10": 0.1286,
                                                                "recall@10": 0.2468, "mrr@10": 0.0929},
                 "at_lr_0.001": {"ndcg@10": 0.125, "recall@10": 0.2385}}
    r = {"dataset": {"ours": {"users": 6033, "items": 3123, "interactions": 834449},
                     "published": {"users": 6040, "items": 3124, "interactions": 834449}}, "filtering": "rating >= 3",
         "published": published, "machine": {"date": "2026-12-06"},
         "ours": _arm(128, 400, 20, 0.131, test_history_excluded={"ndcg@10": 0.14})}
    text = "\n".join(ml1m_sanity({"ml1m_sanity_cpu": r}))
    assert "6,033 users, 3,123 items, 834,449 interactions; RecBole's: 834,449 interactions" in text
    assert "test NDCG@10 0.1310 vs 0.1286 published, Recall@10 0.2000 vs 0.2468" in text
    assert "at our 0.001 it published 0.1250 / 0.2385" in text
    assert "ours is level with the published figure at the same learning rate (105% of its NDCG@10)" in text
    r["ours"]["test"]["ndcg@10"] = 0.0868
    text = "\n".join(ml1m_sanity({"ml1m_sanity_cpu": r}))
    assert "ours is below the published figure at the same learning rate (69% of its NDCG@10)" in text
    assert "lifts ours 1.61x" in text
    assert "not converged" not in text
    assert "is what the three-arm run on ml-100k measures" in text
    arms = {"recbole_defaults": _arm(2048, 48, 41, 0.0636, test_history_excluded={"ndcg@10": 0.1131})}
    text = "\n".join(ml1m_sanity({"ml1m_sanity_cpu": r, "recbole_cpu": {"arms": arms}}))
    assert "the same exclusion lifts RecBole's own SASRec 1.78x (recbole_defaults) (the three-arm run)" in text


def test_the_first_two_sided_file_states_recboles_updates_from_its_own_counts():
    from lab.report.sections_runs import recbole_two_sides

    side = {"epochs_run": 20, "targets_per_epoch": 96458, "seconds_per_epoch": 10.0, "fit_seconds": 200.0,
            "test": {"ndcg@10": 0.1, "recall@10": 0.2}}
    r = {"dataset": "d", "protocol": "p", "epoch_budget": None, "machine": {},
         "ours": {**side, "hyper": {"batch_size": 128, "dropout": 0.2}}, "recbole": side}
    text = "\n".join(recbole_two_sides("recbole_cpu", r))
    assert "RecBole: 128 single targets per batch, 754 updates per epoch" in text
    assert "batch 128 single targets against our 128 windows, dropout 0.2" in text
    assert "the three-arm run above, once made, replaces this" in text
    assert "the three-arm run above replaces this" in "\n".join(recbole_two_sides("s", r, superseded=True))

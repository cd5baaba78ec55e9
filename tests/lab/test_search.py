"""`llmrec-lab tune-heads --search`: the head's sequence of validation grids, given to SASRec with the same rule."""
import json

import yaml

from lab import tune_heads


def _params(tmp_path):
    p = tmp_path / "params.yaml"
    source = {"name": "ml", "format": "recbole", "domain": "d", "interactions": "x.inter", "items": "x.item"}
    p.write_text(yaml.safe_dump({"data": {"sources": [source], "root": str(tmp_path / "data")},
                                 "train": {"run_dir": str(tmp_path / "runs" / "main")},
                                 "report": {"benchmarks_dir": str(tmp_path / "bench")}}))
    return p


def _fake_training(monkeypatch, trained):
    """A validation score that peaks at hidden 128, dropout 0.5, logit adjustment 0.25, max_len 100, lr 2e-3."""
    def score(cfg):
        return (1 - abs(cfg.hidden - 128) / 1000 - abs(cfg.dropout - 0.5) / 10 - abs(cfg.logit_adjustment - 0.25) / 10
                - abs(cfg.max_len - 100) / 1e4 - abs(cfg.lr - 2e-3))

    def train(params, resume, show_progress, head):
        cfg = params.sasrec
        trained.append((cfg.hidden, cfg.dropout, cfg.logit_adjustment, cfg.max_len, cfg.lr))
        return {"cost": {"epochs_run": 3}}

    def evaluate(params, models, split):
        assert split == "valid"  # the search never reads the test split
        value = score(params.sasrec)
        return {"models": {"sasrec": {"overall": {"ndcg@10": value, "recall@10": value},
                                      "by_group": {"tail": {"ndcg@10": value / 2}}}}}

    monkeypatch.setattr(tune_heads, "train_sasrec", train)
    monkeypatch.setattr(tune_heads, "evaluate", evaluate)


def test_search_takes_each_grids_best_and_trains_each_setting_once(tmp_path, monkeypatch):
    trained = []
    _fake_training(monkeypatch, trained)
    p = _params(tmp_path)
    chosen = tune_heads.search(p, "sasrec", log=lambda m: None)
    assert chosen == {"sasrec.hidden": 128, "sasrec.dropout": 0.5, "sasrec.logit_adjustment": 0.25,
                      "sasrec.max_len": 100, "sasrec.lr": 2e-3}
    # 6 + 5 + 3 + 3 points, of which the three that repeat an earlier grid's best are copied, not trained
    assert len(trained) == 14 and len(set(trained)) == 14
    files = sorted(f.name for f in (tmp_path / "bench").iterdir())
    assert files == ["sasrec_tuning_hidden_dropout.json", "sasrec_tuning_logit_adjustment.json",
                     "sasrec_tuning_lr.json", "sasrec_tuning_max_len.json"]
    lr = json.loads((tmp_path / "bench" / "sasrec_tuning_lr.json").read_text())
    assert lr["fixed"] == ["sasrec.hidden=128", "sasrec.dropout=0.5", "sasrec.logit_adjustment=0.25",
                           "sasrec.max_len=100"]
    assert [p["sasrec.lr"] for p in lr["points"]] == [5e-4, 1e-3, 2e-3] and lr["best"]["sasrec.lr"] == 2e-3
    assert all(point["device"] for point in lr["points"])

    trained.clear()  # a rerun resumes: every point is recorded, nothing trains again
    assert tune_heads.search(p, "sasrec", log=lambda m: None) == chosen and trained == []

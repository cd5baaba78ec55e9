"""Runs inside RecBole's own virtualenv (bench_recbole.py makes it); never imports llmrec.

Trains RecBole's SASRec on an atomic .inter file with the given config (RecBole's defaults fill in the rest) and
writes what was measured: the config RecBole actually ran with, optimizer updates and seconds per training epoch,
every validation, the best epoch, full-ranking test evaluation seconds and the test metrics.
"""
import json
import math
import sys
import time
from pathlib import Path

# the knobs to record as RecBole ran them (its defaults and the bench's settings merged)
RECORDED = ["train_batch_size", "learning_rate", "learner", "weight_decay", "epochs", "eval_step", "stopping_step",
            "valid_metric", "seed", "hidden_size", "inner_size", "n_layers", "n_heads", "hidden_dropout_prob",
            "attn_dropout_prob", "hidden_act", "loss_type", "MAX_ITEM_LIST_LENGTH", "eval_args",
            "train_neg_sample_args", "repeatable", "device"]


def best_epoch(valid: list) -> int | None:
    """RecBole's best epoch (1-based): the last validation at least as good as every earlier one (early_stopping
    in recbole/utils/utils.py keeps a tie as the new best)."""
    best, epoch = -math.inf, None
    for e, score in valid:
        if score >= best:
            best, epoch = score, e
    return epoch


def main(config_path: str, out_path: str) -> None:
    import functools

    import torch

    # RecBole 1.2.1 pickles its config into the checkpoints it writes and reads them back with torch.load,
    # which defaults to weights_only=True since torch 2.6; these files are the ones this process just wrote.
    torch.load = functools.partial(torch.load, weights_only=False)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    # Importing recbole.model.sequential_recommender runs sine.py, which switches autograd anomaly detection on
    # for the whole process: a debugging mode that slows RecBole's SASRec epochs down.
    anomaly_was_on = torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(False)

    config = Config(model="SASRec", config_dict=json.loads(Path(config_path).read_text()))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)

    epoch_seconds, valid = [], []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_epoch(*args, **kwargs):
        started = time.perf_counter()
        result = train_epoch(*args, **kwargs)
        epoch_seconds.append(time.perf_counter() - started)
        return result

    def recorded_valid(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        valid.append((len(epoch_seconds), float(score)))
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_epoch, recorded_valid
    started = time.perf_counter()
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    eval_s = time.perf_counter() - started
    targets = len(train_data.dataset)  # each training sequence (a prefix) is one target
    result = {"users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1), "interactions": len(dataset),
              "targets_per_epoch": targets, "batch_size": config["train_batch_size"],
              "updates_per_epoch": math.ceil(targets / config["train_batch_size"]),
              "epochs_run": len(epoch_seconds), "best_epoch": best_epoch(valid), "max_epochs": config["epochs"],
              "seconds_per_epoch": round(sum(epoch_seconds) / max(len(epoch_seconds), 1), 3),
              "epoch_seconds": [round(s, 1) for s in epoch_seconds],  # shows epochs slowed by other jobs
              "fit_seconds": round(fit_s, 1), "test_eval_seconds": round(eval_s, 3),
              "best_valid_ndcg@10": float(best_valid), "valid_ndcg@10": valid,
              "test": {k: float(v) for k, v in test.items()},
              "parameters": sum(p.numel() for p in model.parameters()),
              "effective_config": {k: (str(config[k]) if k == "device" else config[k]) for k in RECORDED},
              "anomaly_detection_switched_off": anomaly_was_on, "recbole_version": __import__("recbole").__version__}
    Path(out_path).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

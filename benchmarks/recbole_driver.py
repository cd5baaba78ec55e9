"""Runs inside RecBole's own virtualenv (bench_recbole.py makes it); never imports llmrec.

Trains RecBole's SASRec on an atomic .inter file with the given config and writes what was measured:
seconds per training epoch, full-ranking test evaluation seconds and the test metrics.
"""
import json
import sys
import time
from pathlib import Path


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

    epoch_seconds = []
    train_epoch = trainer._train_epoch

    def timed_epoch(*args, **kwargs):
        started = time.perf_counter()
        result = train_epoch(*args, **kwargs)
        epoch_seconds.append(time.perf_counter() - started)
        return result

    trainer._train_epoch = timed_epoch
    started = time.perf_counter()
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    eval_s = time.perf_counter() - started
    result = {"users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1), "interactions": len(dataset),
              "targets_per_epoch": len(train_data.dataset),  # each training sequence (a prefix) is one target
              "epochs_run": len(epoch_seconds), "seconds_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds), 3),
              "epoch_seconds": [round(s, 1) for s in epoch_seconds],  # shows epochs slowed by other jobs
              "fit_seconds": round(fit_s, 1), "test_eval_seconds": round(eval_s, 3),
              "best_valid_ndcg@10": float(best_valid), "test": {k: float(v) for k, v in test.items()},
              "parameters": sum(p.numel() for p in model.parameters()),
              "anomaly_detection_switched_off": anomaly_was_on}
    Path(out_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

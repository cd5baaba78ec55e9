"""Runs inside RecBole's own virtualenv (bench_recbole.py makes it); never imports llmrec.

Trains RecBole's SASRec on an atomic .inter file with the given config (RecBole's defaults fill in the rest) and
writes what was measured: the config RecBole actually ran with, optimizer updates and seconds per training epoch,
every validation, the best epoch, full-ranking test evaluation seconds and the test metrics (RecBole's, and
recomputed from the same scores with the user's earlier items excluded, as llmrec evaluates).

Resumable: after every epoch's validation it writes <checkpoint_dir>/last.pth (the model, the optimizer, the early
stopping state, every random generator the training draws from, and what was measured so far), so a killed run goes
on from its last finished epoch exactly as it would have gone uninterrupted. A last.pth written for another config
is ignored. The best model sits at a fixed path (<checkpoint_dir>/SASRec-best.pth) so a resumed run tests it.
"""
import json
import math
import os
import random
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


def test_metrics_both_protocols(model, test_data, dataset, device) -> dict:
    """The best model's test metrics at 10 recomputed from its full-ranking scores, under RecBole's protocol (the
    user's earlier items stay candidates: `recomputed`, which must match RecBole's own `test`) and under ours
    (`history_excluded`: every item of the user other than the target is removed, as llmrec's full_ranks does;
    leave-one-out by time makes the test target the user's last event). Ties count against the target, as in
    llmrec."""
    import torch

    users, items = dataset.inter_feat[dataset.uid_field], dataset.inter_feat[dataset.iid_field]
    seen = torch.zeros(dataset.user_num, dataset.item_num, dtype=torch.bool)
    seen[users, items] = True
    ranks = {"recomputed": [], "history_excluded": []}
    model.eval()
    with torch.no_grad():
        for interaction, _, positive_u, positive_i in test_data:
            scores = model.full_sort_predict(interaction.to(device)).view(-1, dataset.item_num).cpu()
            scores[:, 0] = -math.inf  # RecBole's padding id
            rows = torch.arange(len(scores))
            assert torch.equal(positive_u.cpu(), rows), "one test target per row (leave-one-out)"
            target = positive_i.cpu()
            earlier = seen[interaction[dataset.uid_field].cpu()]
            earlier[rows, target] = False
            excluded = scores.masked_fill(earlier, -math.inf)
            for protocol, ranked in (("recomputed", scores), ("history_excluded", excluded)):
                ranks[protocol].append((ranked >= ranked[rows, target][:, None]).sum(1) - 1)
    out = {}
    for protocol, parts in ranks.items():
        r = torch.cat(parts).double()
        hit = r < 10
        out[protocol] = {"ndcg@10": float((hit / torch.log2(r + 2)).mean()), "recall@10": float(hit.double().mean()),
                         "mrr@10": float((hit / (r + 1)).mean()), "targets": len(r)}
    return out


def main(config_path: str, out_path: str, stop_after: int | None = None) -> None:
    """stop_after: end this process (exit code 3, as a kill would) after that many epochs of this run; tests use
    it to interrupt a run and resume it."""
    import functools

    import numpy as np
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

    given = json.loads(Path(config_path).read_text())
    config = Config(model="SASRec", config_dict=given)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    folder = Path(config["checkpoint_dir"])
    trainer.saved_model_file = str(folder / "SASRec-best.pth")  # RecBole names it by the clock: a resume must find it
    last = folder / "last.pth"

    progress = {"epoch_seconds": [], "valid": [], "fit_seconds": 0.0, "resumed_after_epochs": [], "stopped": False}
    state = torch.load(last, map_location=config["device"]) if last.is_file() else None
    if state is not None and state["given_config"] == given:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.start_epoch = state["epoch"] + 1
        trainer.cur_step, trainer.best_valid_score = state["cur_step"], state["best_valid_score"]
        trainer.best_valid_result = state["best_valid_result"]
        train_data.generator.set_state(state["rng"]["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        progress = state["progress"]
        progress["resumed_after_epochs"].append(trainer.start_epoch)
        print(f"resuming after epoch {trainer.start_epoch} ({last})", flush=True)
    elif state is not None:
        print(f"ignoring {last}: written for another config", flush=True)
    # each start of the process: (epochs done before it, torch threads), as epoch seconds depend on both
    progress.setdefault("threads_from_epoch", []).append((trainer.start_epoch, torch.get_num_threads()))
    epoch_seconds, valid = progress["epoch_seconds"], progress["valid"]
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

    fit_before, started = progress["fit_seconds"], time.perf_counter()

    def save_last(epoch_idx, valid_score):
        """Called by RecBole's fit after each validation, once its early-stopping state and best model are saved."""
        progress["fit_seconds"] = fit_before + time.perf_counter() - started
        progress["stopped"] = trainer.cur_step > trainer.stopping_step  # RecBole's own stop rule (early_stopping)
        rng = {"loader": train_data.generator.get_state(), "torch": torch.get_rng_state(),
               "numpy": np.random.get_state(), "python": random.getstate()}
        snapshot = {"given_config": given, "epoch": epoch_idx, "cur_step": trainer.cur_step,
                    "best_valid_score": trainer.best_valid_score, "best_valid_result": trainer.best_valid_result,
                    "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                    "rng": rng, "progress": progress}
        torch.save(snapshot, folder / "last.pth.tmp")
        os.replace(folder / "last.pth.tmp", last)
        if stop_after is not None and epoch_idx + 1 - trainer.start_epoch >= stop_after:
            sys.exit(3)

    trainer._train_epoch, trainer._valid_epoch = timed_epoch, recorded_valid
    # a finished fit is not entered again: RecBole's fit would overwrite the best model when no epoch is left
    if not progress["stopped"] and trainer.start_epoch < trainer.epochs:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=save_last)
    started = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    eval_s = time.perf_counter() - started
    both = test_metrics_both_protocols(trainer.model, test_data, dataset, config["device"])
    targets = len(train_data.dataset)  # each training sequence (a prefix) is one target
    result = {"users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1), "interactions": len(dataset),
              "targets_per_epoch": targets, "batch_size": config["train_batch_size"],
              "updates_per_epoch": math.ceil(targets / config["train_batch_size"]),
              "epochs_run": len(epoch_seconds), "best_epoch": best_epoch(valid), "max_epochs": config["epochs"],
              "seconds_per_epoch": round(sum(epoch_seconds) / max(len(epoch_seconds), 1), 3),
              "epoch_seconds": [round(s, 1) for s in epoch_seconds],  # shows epochs slowed by other jobs
              "fit_seconds": round(progress["fit_seconds"], 1), "test_eval_seconds": round(eval_s, 3),
              "resumed_after_epochs": progress["resumed_after_epochs"],
              "threads_from_epoch": progress["threads_from_epoch"],
              "best_valid_ndcg@10": float(trainer.best_valid_score), "valid_ndcg@10": valid,
              "test": {k: float(v) for k, v in test.items()},
              "test_recomputed": both["recomputed"], "test_history_excluded": both["history_excluded"],
              "parameters": sum(p.numel() for p in model.parameters()),
              "effective_config": {k: (str(config[k]) if k == "device" else config[k]) for k in RECORDED},
              "anomaly_detection_switched_off": anomaly_was_on, "recbole_version": __import__("recbole").__version__}
    Path(out_path).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)

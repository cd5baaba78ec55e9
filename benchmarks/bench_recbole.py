"""Our SASRec beside RecBole's on the same ml-100k data, at equal work and to convergence, in one run
(make bench-recbole).

1. Prepare ml-100k (../shared) with our pipeline as ONE domain, so our full ranking is over every
   item, as RecBole's is.
2. Train and evaluate our standard SASRec on it to convergence: every training target once per epoch,
   early stopping on validation NDCG@10 (the params file's `sasrec` section: max_len, hidden, dropout,
   lr, batch size, eval_every, patience).
3. Export exactly the prepared events (same users, items, order; timestamps replaced by each
   user's event rank so ties cannot reorder) as a RecBole atomic .inter file, and train RecBole's
   SASRec with the same knobs (MAX_ITEM_LIST_LENGTH = max_len, batch size, learning rate, dropout) and
   the same early-stopping rule, leave-one-out split, full ranking. RecBole also trains each training
   target once per epoch (each prefix is a sequence), so epochs are equal work; both sides record their
   training targets per epoch and the report compares time per 1,000 targets.
RecBole goes into its own virtualenv (.bench-venv/recbole), never into the project's environment.
Result: reports/benchmarks/recbole_cpu.json (read by `llmrec-lab report`).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "recbole"
VENV = REPO / ".bench-venv" / "recbole"
ML100K = REPO.parent / "shared" / "data" / "ml-100k"
RECBOLE_PINS = ["torch==2.13.0", "recbole==1.2.1", "numpy<2", "pandas<2.3"]  # RecBole 1.2.1 uses np.float_


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *RECBOLE_PINS], check=True)
    return python


def our_side(max_epochs: int) -> tuple[dict, Path, dict]:
    from llmrec_core.train.sequence import train_sasrec
    from llmrec_core.config import load_params
    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.prepare import prepare
    from llmrec_core.data.validate import validate
    from llmrec_core.evaluate.run import evaluate

    source = (f"data.sources=[{{name: ml-100k, format: recbole, domain: Movies, "
              f"interactions: {ML100K / 'ml-100k.inter'}, items: {ML100K / 'ml-100k.item'}}}]")
    params = load_params(REPO / "configs" / "ml-100k.yaml", [
        source, "data.top_domains=null", f"data.root={WORK / 'data'}", f"validation.results_dir={WORK / 'gx'}",
        f"train.run_dir={WORK / 'ours'}", f"sasrec.run_dir={WORK / 'ours' / 'sasrec'}", f"sasrec.epochs={max_epochs}"])
    if not (params.data_root / "prepared" / "manifest.json").is_file():
        ingest(params), validate(params), prepare(params)
    started = time.perf_counter()
    trained = train_sasrec(params, resume=False, show_progress=False)
    fit_s = time.perf_counter() - started
    out = evaluate(params, ("sasrec",), "test")
    overall = out["models"]["sasrec"]["overall"]
    cost = trained["cost"]
    cost_eval = json.loads((WORK / "ours" / "cost_eval.json").read_text())["sasrec"]
    s = params.sasrec
    hyper = {"hidden": s.hidden, "layers": s.layers, "heads": s.heads, "dropout": s.dropout, "lr": s.lr,
             "max_len": s.max_len, "batch_size": s.batch_size, "max_epochs": s.epochs, "eval_every": s.eval_every,
             "patience": s.patience}
    result = {"epochs_run": cost["epochs_run"], "seconds_per_epoch": cost["seconds_per_epoch"],
              "targets_per_epoch": cost["targets_per_epoch"], "fit_seconds": round(fit_s, 1),
              "test_eval_seconds": cost_eval["seconds_total"], "best_valid_ndcg@10": trained["best_valid_ndcg@10"],
              "test": {"ndcg@10": overall["ndcg@10"], "recall@10": overall["recall@10"], "mrr": overall["mrr"]},
              "parameters": cost["parameters_total"], "hyper": hyper}
    return result, params.data_root / "prepared", hyper


def export_inter(prepared: Path, folder: Path, name: str) -> Path:
    import pandas as pd

    events = pd.read_parquet(prepared / "events.parquet", columns=["user_idx", "item_idx"])
    order = events.groupby("user_idx", sort=False).cumcount()  # events are in time order per user
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.inter"
    pd.DataFrame({"user_id:token": events["user_idx"], "item_id:token": events["item_idx"],
                  "timestamp:float": order}).to_csv(out, sep="\t", index=False)
    return out


def recbole_side(python: Path, prepared: Path, hyper: dict) -> dict:
    name = "ml100k-llmrec"
    export_inter(prepared, WORK / "recbole" / name, name)
    config = {
        "data_path": str(WORK / "recbole"), "dataset": name, "checkpoint_dir": str(WORK / "recbole" / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",  # already filtered by us
        "MAX_ITEM_LIST_LENGTH": hyper["max_len"], "hidden_size": hyper["hidden"], "inner_size": 4 * hyper["hidden"],
        "n_layers": hyper["layers"], "n_heads": hyper["heads"], "hidden_dropout_prob": hyper["dropout"],
        "attn_dropout_prob": hyper["dropout"], "hidden_act": "gelu", "loss_type": "CE", "train_neg_sample_args": None,
        "learning_rate": hyper["lr"], "epochs": hyper["max_epochs"], "eval_step": hyper["eval_every"],
        "stopping_step": hyper["patience"], "train_batch_size": hyper["batch_size"], "eval_batch_size": 4096,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Recall", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "device": "cpu", "use_gpu": False, "seed": 0, "reproducibility": True, "show_progress": False,
    }
    config_path = WORK / "recbole" / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    out = WORK / "recbole" / "result.json"
    subprocess.run([str(python), str(REPO / "benchmarks" / "recbole_driver.py"), str(config_path), str(out)],
                   check=True, cwd=WORK / "recbole")
    result = json.loads(out.read_text())
    version = subprocess.run([str(python), "-c", "import recbole; print(recbole.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    return {**result, "recbole_version": version}


def main() -> None:
    import argparse
    import shutil

    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-epochs", type=int, default=200, help="cap for both sides; both stop early on validation")
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)  # a fresh run each time: nothing resumed, nothing cached
    if not (ML100K / "ml-100k.inter").is_file():
        sys.exit(f"{ML100K}: ml-100k atomic files not found")
    python = ensure_venv()
    load_before = {"ours": round(os.getloadavg()[0], 2)}  # other jobs on the cores inflate both sides' seconds
    ours, prepared, hyper = our_side(args.max_epochs)
    load_before["recbole"] = round(os.getloadavg()[0], 2)
    theirs = recbole_side(python, prepared, hyper)
    # a side that used every allowed epoch did not converge: the file then reports a fixed epoch budget
    capped = max(ours["epochs_run"], theirs["epochs_run"]) >= args.max_epochs
    result = {"dataset": "ml-100k (../shared), prepared by llmrec as one domain; identical events on both sides",
              "protocol": "leave-one-out by time, full ranking over all items, history excluded; early stopping on "
                          "validation NDCG@10 with the same knobs on both sides" + (
                              f", capped at {args.max_epochs} epochs" if capped else ", both to convergence"),
              "epoch_budget": args.max_epochs if capped else None,
              "ours": ours, "recbole": theirs,
              "machine": {"machine": platform.machine(), "cpu_threads": torch.get_num_threads(), "gpu": None,
                          "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
                          "load_average_1min_before": load_before}}
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_model import OUT, publish

    OUT.mkdir(parents=True, exist_ok=True)
    publish("recbole", result)  # both sides run with device "cpu"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

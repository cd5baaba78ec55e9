"""Our SASRec beside RecBole's on the same ml-100k data, each arm to convergence, in one run (make bench-recbole);
and, with --ml1m-sanity, our SASRec on ml-1m prepared as RecBole's published benchmark, beside its figure
(make bench-recbole-ml1m).

Side by side (three arms on the same prepared events):
  ours              the params file's frozen `sasrec` section (configs/ml-100k.yaml): batches of 128 windows of
                    max_len items, so few optimizer updates per epoch.
  recbole_defaults  RecBole 1.2.1's SASRec at RecBole's own defaults (RECBOLE_DEFAULTS), only the data, the
                    validation metric (NDCG@10, as ours) and what CE loss requires (no negative sampler) set.
  recbole_matched   the same with train_batch_size set so that RecBole's optimizer updates per epoch match ours.
Every arm stops early on validation NDCG@10 (never on test) within its own epoch cap. Test metrics of every arm
are compared under RecBole's protocol (leave-one-out by time, full ranking, the user's history NOT excluded:
RecBole's sequential evaluation keeps it); ours is also given under ours (history excluded).
The events are our pipeline's (ml-100k from ../shared as ONE domain, so both rank every item), exported as a
RecBole atomic .inter file with timestamps replaced by each user's event rank (ties cannot reorder).

Each finished arm is cached in bench/recbole/<data>/arms/<arm>.json with the key of what it ran, and the result
file is written after every finished arm (the others listed as `pending`), so a killed run redoes only the
unfinished arms, and each of those resumes from its last finished epoch (ours from its checkpoint,
RecBole's from the last.pth its driver writes after every epoch); --fresh starts over. RecBole lives in its
own virtualenv (.bench-venv/recbole), never in the project's environment.

--arm NAME runs only the named arms; the others enter the result file from their cache when finished there (it is
re-read before every write), so on a CPU the two RecBole arms can run at once, one core each:
  OMP_NUM_THREADS=1 make bench-recbole ARM=recbole_defaults &
  OMP_NUM_THREADS=1 make bench-recbole ARM=recbole_matched &
(RecBole's steps gain nothing from a second thread: on the 2-core dev machine an ml-100k epoch of the defaults arm
took 239 s on two threads with the machine otherwise idle, and 217 s on one thread with the matched arm training on
the other core, so two arms at once, one core each, finish in about half the time of one after the other.)

A run with --max-epochs or --user-sample is a smoke test: written to bench/recbole only. Otherwise the result goes
to reports/benchmarks/recbole_<device>.json (or ml1m_sanity_<device>.json), read by `llmrec-lab report`.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "recbole"
VENV = REPO / ".bench-venv" / "recbole"
DATA = REPO.parent / "shared" / "data"
RECBOLE_PINS = ["torch==2.13.0", "recbole==1.2.1", "numpy<2", "pandas<2.3"]  # RecBole 1.2.1 uses np.float_

# RecBole 1.2.1's defaults for SASRec: recbole/properties/overall.yaml, model/SASRec.yaml and
# quick_start_config/sequential.yaml (which its Config loads for every sequential model but DIN/DIEN/GRU4RecKG/KSR).
# The driver records the values RecBole actually ran with, read back from its Config.
RECBOLE_DEFAULTS = {
    "train_batch_size": 2048, "learning_rate": 0.001, "learner": "adam", "weight_decay": 0.0, "epochs": 300,
    "eval_step": 1, "stopping_step": 10, "valid_metric": "MRR@10", "seed": 2020,
    "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2, "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5, "hidden_act": "gelu", "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 50,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
}
# What every RecBole arm sets besides the data: CE loss refuses a negative sampler (Config raises on the default
# uniform one), and early stopping reads validation NDCG@10 as ours does (RecBole's default is MRR@10).
RECBOLE_REQUIRED = {"train_neg_sample_args": None, "valid_metric": "NDCG@10", "metrics": ["Recall", "NDCG", "MRR"],
                    "topk": [10], "show_progress": False}

# RecBole's published SASRec on ml-1m (RUCAIBox/RecBole, benchmark/hyper/sequential/SASRec-ml-1m_seq.md and
# benchmark/md/ml-1m_seq.md, added in commit 7bb55286 of 2022-08-28, removed from the repository in fbc92422 of
# 2022-11-04; the same dataset config stands in asset/time_test_result/Sequential_recommendation.md).
PUBLISHED_ML1M = {
    "source": "RUCAIBox/RecBole@7bb55286: benchmark/hyper/sequential/SASRec-ml-1m_seq.md (results), "
              "benchmark/md/ml-1m_seq.md (dataset and protocol)",
    "protocol": "ml-1m, interactions with rating < 3 removed, then 10-core on users and items (iterative); "
                "chronological leave-one-out (valid_and_test), full ranking without history exclusion; "
                "MAX_ITEM_LIST_LENGTH 50, train_batch_size 4096, up to 500 epochs, early stopping on valid NDCG@10; "
                "other knobs at RecBole's defaults (hidden 64, dropout 0.5); learning_rate chosen on validation "
                "among 0.0003, 0.0005, 0.001, 0.003, 0.005",
    # as ml-1m_seq.md prints them; RecBole's user and item counts include its padding id 0, and the time test of
    # the same config (asset/time_test_result/Sequential_recommendation.md) gives 6,034 users: 6,033 real ones
    "dataset": {"users": 6040, "items": 3124, "interactions": 834449},
    "best": {"learning_rate": 0.0005, "ndcg@10": 0.1286, "recall@10": 0.2468, "mrr@10": 0.0929},
    "at_lr_0.001": {"ndcg@10": 0.125, "recall@10": 0.2385, "mrr@10": 0.0906},  # our frozen lr
}
ML1M_MIN_RATING, ML1M_KCORE = 3, 10
ARMS = ("ours", "recbole_defaults", "recbole_matched")  # the side by side's arms, in the order they run
RECBOLE_DATASET = "ml100k-llmrec"  # the side by side's events as RecBole's atomic files


# ---- pure logic (tests/code/test_bench_recbole.py) ----

def updates_per_epoch(examples: int, batch_size: int) -> int:
    """Optimizer steps in one pass over `examples` in batches of `batch_size` (the last one may be short)."""
    return math.ceil(examples / batch_size)


def matched_batch_size(targets: int, updates: int) -> int:
    """The smallest batch of single targets whose epoch takes at most `updates` optimizer steps."""
    return math.ceil(targets / updates)


def recbole_config(dataset: str, folder: Path, device: str, max_epochs: int | None = None,
                   train_batch_size: int | None = None) -> dict:
    """A RecBole arm's config: the data and RECBOLE_REQUIRED on top of RecBole's own defaults; `train_batch_size`
    for the matched arm; `max_epochs` caps RecBole's epochs (smoke tests); `device` cpu or cuda."""
    config = {
        "data_path": str(folder), "dataset": dataset, "checkpoint_dir": str(folder / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",  # already filtered by us
        "gpu_id": "0" if device == "cuda" else "",  # RecBole runs on the CPU when gpu_id is empty
        **RECBOLE_REQUIRED,
    }
    if train_batch_size is not None:
        config["train_batch_size"] = train_batch_size
    if max_epochs is not None:
        config["epochs"] = max_epochs
    return config


def recbole_protocol_metrics(ranks) -> dict:
    """NDCG@10, Recall@10 and MRR@10 (RecBole's truncated MRR) of 0-based target ranks, one target per user."""
    import numpy as np

    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks < 10
    return {"ndcg@10": float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
            "recall@10": float(hit.mean()), "mrr@10": float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean())}


def best_epoch(evals: list[dict]) -> int | None:
    """The epoch of the best validation NDCG@10 in our training's records (the first, as ours keeps strict gains)."""
    return max(evals, key=lambda e: e["valid_ndcg@10"])["epoch"] if evals else None


def arm_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step, so a process reading it beside this one never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def finished_arm(folder: Path, name: str, spec: dict) -> dict | None:
    """The arm's result from folder/arms/<name>.json when it ran with the same `spec`, else None."""
    path = folder / "arms" / f"{name}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == arm_key(spec):
            return cached["result"]
    return None


def cached_arm(folder: Path, name: str, spec: dict, run) -> dict:
    """The arm's result from folder/arms/<name>.json when it ran with the same `spec`; else run() and cache it."""
    result = finished_arm(folder, name, spec)
    if result is not None:
        print(f"{name}: cached ({folder / 'arms' / f'{name}.json'})", flush=True)
        return result
    print(f"{name}: running", flush=True)
    load = round(os.getloadavg()[0], 2)  # other jobs on the cores inflate the arm's seconds
    result = {**run(), "load_average_1min_before": load}
    write_atomically(folder / "arms" / f"{name}.json",
                     json.dumps({"key": arm_key(spec), "spec": spec, "result": result}, indent=2, default=str))
    return result


def keep_ratings(src: Path, dst: Path, min_rating: float) -> int:
    """Copy a RecBole .inter file keeping the interactions rated `min_rating` or more; returns how many."""
    import pandas as pd

    frame = pd.read_csv(src, sep="\t", dtype=str, keep_default_na=False)
    rating = next(c for c in frame.columns if c.split(":")[0] == "rating")
    kept = frame[pd.to_numeric(frame[rating]) >= min_rating]
    dst.parent.mkdir(parents=True, exist_ok=True)
    kept.to_csv(dst, sep="\t", index=False)
    return len(kept)


# ---- our side ----

def our_params(folder: Path, inter: Path, items: Path, overrides: list[str]):
    from llmrec_core.config import load_params

    source = f"data.sources=[{{name: bench, format: recbole, domain: Movies, interactions: {inter}, items: {items}}}]"
    return load_params(REPO / "configs" / "ml-100k.yaml", [
        source, "data.top_domains=null", f"data.root={folder / 'data'}", f"validation.results_dir={folder / 'gx'}",
        f"train.run_dir={folder / 'ours'}", f"sasrec.run_dir={folder / 'ours' / 'sasrec'}", *overrides])


def prepared(params) -> Path:
    """Prepare the params' data once (ingest, validate, prepare); the prepared folder."""
    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.prepare import prepare
    from llmrec_core.data.validate import validate

    if not (params.data_root / "prepared" / "manifest.json").is_file():
        ingest(params), validate(params), prepare(params)
    return params.data_root / "prepared"


def our_schedule(params) -> dict:
    """Our SASRec's epoch: training targets, windows, batch size and optimizer updates."""
    from llmrec_core.data.settings import load_setting
    from llmrec_core.train.sequence import training_windows

    windows = training_windows(load_setting(prepared(params), params.train.setting, params.train.domain),
                               params.sasrec.max_len)
    targets = int(((windows[:, :-1] > 0) & (windows[:, 1:] > 0)).sum())
    s = params.sasrec
    return {"targets_per_epoch": targets, "windows_per_epoch": len(windows), "batch_size": s.batch_size,
            "updates_per_epoch": updates_per_epoch(len(windows), s.batch_size)}  # one step per batch, any members


def run_ours(params) -> dict:
    """Train our SASRec to its early stop (resuming a matching checkpoint) and test it under both protocols."""
    from llmrec_core.data.settings import load_setting
    from llmrec_core.evaluate.ranking import select_rows
    from llmrec_core.evaluate.run import evaluate
    from llmrec_core.evaluate.sequence import evaluate_sasrec
    from llmrec_core.evaluate.trained import load_sasrec
    from llmrec_core.train.sequence import train_sasrec

    started = time.perf_counter()
    trained = train_sasrec(params, resume="auto", show_progress=True)
    fit_s = time.perf_counter() - started
    overall = evaluate(params, ("sasrec",), "test")["models"]["sasrec"]["overall"]
    # RecBole's protocol: the same test rows, the user's earlier items not excluded from the ranking
    plain = params.model_copy(update={"eval": params.eval.model_copy(update={"exclude_history": False})})
    data = load_setting(params.data_root / "prepared", params.train.setting, params.train.domain)
    _, ranks = evaluate_sasrec(load_sasrec(params, len(data.items), "sasrec"), select_rows(data, "test", None, 0),
                               data, plain, return_ranks=True)
    cost, s = trained["cost"], params.sasrec
    return {"epochs_run": cost["epochs_run"], "best_epoch": best_epoch(trained["evals"]),
            "seconds_per_epoch": cost["seconds_per_epoch"], "fit_seconds": round(fit_s, 1),
            "best_valid_ndcg@10": trained["best_valid_ndcg@10"], "device": cost.get("device"),
            "test": recbole_protocol_metrics(ranks),
            "test_history_excluded": {k: overall[k] for k in ("ndcg@10", "recall@10", "mrr")},
            "max_epochs": s.epochs, "parameters": cost["parameters_total"],
            "valid_users": params.eval.max_valid_users,
            "config": {"hidden": s.hidden, "layers": s.layers, "heads": s.heads, "dropout": s.dropout, "lr": s.lr,
                       "max_len": s.max_len, "batch_size": s.batch_size, "max_epochs": s.epochs,
                       "eval_every": s.eval_every, "patience": s.patience, "logit_adjustment": s.logit_adjustment,
                       "seed": s.seed}}


# ---- RecBole's side ----

def ensure_venv(venv: Path = VENV, pins: tuple[str, ...] = tuple(RECBOLE_PINS)) -> Path:
    """RecBole's virtualenv, made once. Arms started together wait on one lock, and the stamp is written only after
    pip succeeded, so a half-made venv (killed install) is finished by the next run instead of trusted."""
    python, stamp = venv / "bin" / "python", venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        installed = stamp.is_file() and stamp.read_text() == "\n".join(pins)
        if not installed:
            if not python.is_file():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
            stamp.write_text("\n".join(pins))
    return python


def export_inter(prepared_dir: Path, folder: Path, name: str) -> Path:
    import pandas as pd

    events = pd.read_parquet(prepared_dir / "events.parquet", columns=["user_idx", "item_idx"])
    order = events.groupby("user_idx", sort=False).cumcount()  # events are in time order per user
    out = folder / f"{name}.inter"
    text = pd.DataFrame({"user_id:token": events["user_idx"], "item_id:token": events["item_idx"],
                         "timestamp:float": order}).to_csv(sep="\t", index=False)
    write_atomically(out, text)  # an arm running beside this process may be reading it
    return out


def run_recbole(python: Path, folder: Path, config: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    subprocess.run([str(python), str(REPO / "benchmarks" / "recbole_driver.py"), str(folder / "config.json"),
                    str(folder / "result.json")], check=True, cwd=folder)
    return json.loads((folder / "result.json").read_text())


def side_by_side_arms(args, device: str) -> tuple[Path, object, dict, dict]:
    """The side by side's folder, our params, and per arm of ARMS what it runs (its cache key's spec) and how."""
    folder = WORK / ("ml-100k" if args.user_sample is None else f"ml-100k-sample{args.user_sample}")
    overrides = [f"sasrec.epochs={args.max_epochs}"] if args.max_epochs else []
    if args.user_sample:
        overrides.append(f"prepare.user_sample={args.user_sample}")
    params = our_params(folder, DATA / "ml-100k" / "ml-100k.inter", DATA / "ml-100k" / "ml-100k.item", overrides)
    schedule = our_schedule(params)
    manifest = json.loads((params.data_root / "prepared" / "manifest.json").read_text())
    data_key = {"overrides": overrides, "prepared": arm_key(manifest), "device": device}
    specs = {"ours": {**data_key, "sasrec": params.sasrec.model_dump(mode="json")}}
    runs = {"ours": lambda: {**schedule, **run_ours(params)}}
    batches = {"recbole_defaults": None,
               "recbole_matched": matched_batch_size(schedule["targets_per_epoch"], schedule["updates_per_epoch"])}
    for arm, batch in batches.items():
        config = recbole_config(RECBOLE_DATASET, folder / "recbole", device, args.max_epochs, batch)
        config["checkpoint_dir"] = str(folder / "recbole" / arm / "saved")
        specs[arm] = {**data_key, "config": config}
        runs[arm] = lambda arm=arm, config=config: run_recbole(ensure_venv(), folder / "recbole" / arm, config)
    return folder, params, specs, runs


def side_by_side(args, device: str, publish_partial=None) -> tuple[str, dict]:
    """The arms of ARMS chosen by args.arms (all when None), in order; the others are taken from their cache when
    finished there. After each finished arm, `publish_partial(name, result)` with every finished arm (the cache
    re-read, as another process may be running the rest) and the others under `pending`, so a run killed in a later
    arm, or left for a GPU, still shows what finished."""
    folder, params, specs, runs = side_by_side_arms(args, device)

    def finished(ran: dict) -> dict:
        results = {arm: ran.get(arm) or finished_arm(folder, arm, specs[arm]) for arm in ARMS}
        return {arm: result for arm, result in results.items() if result is not None}

    ran = {}
    for arm in [a for a in ARMS if not args.arms or a in args.arms]:
        if arm != "ours":
            export_inter(params.data_root / "prepared", folder / "recbole" / RECBOLE_DATASET, RECBOLE_DATASET)
        ran[arm] = cached_arm(folder, arm, specs[arm], runs[arm])
        if publish_partial:
            publish_partial("recbole", side_by_side_result(args, finished(ran)))
    return "recbole", side_by_side_result(args, finished(ran))


def side_by_side_result(args, arms: dict) -> dict:
    capped = [arm for arm, r in arms.items() if r["epochs_run"] >= r["max_epochs"]]  # stopped by the cap, not early
    return {
        "schema": 2,
        "dataset": "ml-100k (../shared), prepared by llmrec as one domain; identical events in every arm"
                   + (f"; a sample of {args.user_sample} users" if args.user_sample else ""),
        "protocol": "leave-one-out by time, full ranking over all items; each arm stops early on validation "
                    "NDCG@10 within its own epoch cap; `test` is RecBole's protocol (the user's earlier items are "
                    "not excluded) in every arm, `test_history_excluded` ranks the same scores without them (ours)",
        "arms": arms, "capped": capped, "pending": [arm for arm in ARMS if arm not in arms],
        "recbole_defaults": RECBOLE_DEFAULTS,
        "recbole_defaults_source": "recbole 1.2.1: recbole/properties/overall.yaml, model/SASRec.yaml, "
                                   "quick_start_config/sequential.yaml",
        "recbole_required": {k: v for k, v in RECBOLE_REQUIRED.items() if k != "show_progress"},
    }


def ml1m_sanity(args, device: str) -> tuple[str, dict]:
    folder = WORK / ("ml-1m" if args.user_sample is None else f"ml-1m-sample{args.user_sample}")
    inter = folder / "source" / "ml-1m-rating3.inter"
    if not inter.is_file():
        keep_ratings(DATA / "ml-1m" / "ml-1m.inter", inter, ML1M_MIN_RATING)
    overrides = [f"prepare.min_user_interactions={ML1M_KCORE}", f"prepare.min_item_interactions={ML1M_KCORE}"]
    overrides += [f"sasrec.epochs={args.max_epochs}"] if args.max_epochs else []
    overrides += [f"prepare.user_sample={args.user_sample}"] if args.user_sample else []
    params = our_params(folder, inter, DATA / "ml-1m" / "ml-1m.item", overrides)
    manifest = json.loads((prepared(params) / "manifest.json").read_text())
    import pandas as pd

    events = pd.read_parquet(params.data_root / "prepared" / "events.parquet", columns=["user_idx", "item_idx"])
    stats = {"users": int(events["user_idx"].nunique()), "items": int(events["item_idx"].nunique()),
             "interactions": len(events)}
    print(f"ml-1m prepared: {stats} (published: {PUBLISHED_ML1M['dataset']})", flush=True)
    if args.prepare_only:
        return "", {}
    ours = cached_arm(folder, "ours", {"overrides": overrides, "prepared": arm_key(manifest), "device": device,
                                       "sasrec": params.sasrec.model_dump(mode="json")},
                      lambda: {**our_schedule(params), **run_ours(params)})
    result = {"schema": 1, "dataset": {"ours": stats, "published": PUBLISHED_ML1M["dataset"]},
              "filtering": f"rating >= {ML1M_MIN_RATING}, then a {ML1M_KCORE}-core on users and items (our prepare)",
              "ours": ours, "published": PUBLISHED_ML1M}
    return "ml1m_sanity", result


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every arm trains")
    ap.add_argument("--ml1m-sanity", action="store_true", help="our SASRec on ml-1m beside RecBole's published figure")
    ap.add_argument("--prepare-only", action="store_true", help="--ml1m-sanity: prepare the data and print its size")
    ap.add_argument("--max-epochs", type=int, help="smoke test: cap every arm's epochs")
    ap.add_argument("--user-sample", type=int, help="smoke test: keep this many users (prepare.user_sample)")
    ap.add_argument("--arm", dest="arms", action="append", choices=ARMS,
                    help="run only this arm (repeatable); the others come from their cache when finished there")
    ap.add_argument("--fresh", action="store_true", help="forget cached arms, checkpoints and prepared data")
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # ours picks CUDA whenever it sees a GPU
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU visible to torch")
    if args.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    smoke = args.max_epochs is not None or args.user_sample is not None

    def write(name: str, result: dict) -> None:
        gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
        result["machine"] = {"machine": platform.machine(), "cpu_threads": torch.get_num_threads(), "gpu": gpu,
                             "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
                             "cpus": os.cpu_count(), "smoke": smoke}
        WORK.mkdir(parents=True, exist_ok=True)
        (WORK / f"{name}.json").write_text(json.dumps(result, indent=2))
        if not smoke:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from bench_model import OUT, publish

            OUT.mkdir(parents=True, exist_ok=True)
            print(f"published {publish(name, result)}", flush=True)

    if args.ml1m_sanity:
        name, result = ml1m_sanity(args, args.device)
        if not name:
            return
        write(name, result)
    else:  # written after every finished arm
        name, result = side_by_side(args, args.device, publish_partial=write)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

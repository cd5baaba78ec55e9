"""Evaluate LLM-Rec (tuned or zero-shot) and the popularity baseline on one data setting.

Item vectors are encoded once per evaluation in large batches; users' history sentences are
encoded in batches; ranking is chunked matrix multiplication (see ranking.py).
"""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch

from ..config import Params
from ..cost import CostMeter, latency_percentiles
from ..data.layout import DataLayout
from ..data.settings import SettingData, load_setting
from ..provenance import EXPERIMENT_CODE, provenance
from .metrics import breakdown
from .ranking import ScoreFn, full_ranks, sampled_ranks, vector_scores

MODELS = ("llmrec", "zero_shot", "seqhead", "sasrec", "popularity")


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def encode_items(bundle, n_items: int, batch_size: int) -> torch.Tensor:
    enc = bundle.encoder
    device, out = _device(enc), []
    for s in range(0, n_items, batch_size):
        ids, mask = bundle.tokens.items(range(s, min(n_items, s + batch_size)))
        out.append(enc(ids.to(device), mask.to(device)).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_histories(bundle, histories: list[np.ndarray], batch_size: int) -> torch.Tensor:
    enc = bundle.encoder
    device, out = _device(enc), []
    for s in range(0, len(histories), batch_size):
        ids, mask = bundle.tokens.users(histories[s: s + batch_size])
        out.append(enc(ids.to(device), mask.to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, 1)


def select_rows(data: SettingData, split: str, max_users: int | None, seed: int) -> pd.DataFrame:
    rows = data.eval_rows[data.eval_rows["split"] == split]
    if max_users is not None and len(rows) > max_users:
        rows = rows.sample(n=max_users, random_state=seed).sort_index()
    return rows.reset_index(drop=True)


def rank_rows(params: Params, score: ScoreFn, rows: pd.DataFrame, data: SettingData) -> np.ndarray:
    targets = rows["target"].to_numpy(dtype=np.int64)
    seen = list(rows["seen"]) if params.eval.exclude_history else None  # all earlier items, not only the window
    if params.eval.protocol == "sampled":
        return sampled_ranks(score, targets, seen, data.domain_ranges, params.eval.sampled_negatives,
                             params.eval.seed)
    return full_ranks(score, targets, seen, data.domain_ranges)


def evaluate_encoder(params: Params, bundle, data: SettingData, split: str = "test",
                     max_users: int | None = None, meter: CostMeter | None = None) -> dict:
    return evaluate_encoder_vectors(params, bundle, data, split, max_users, meter)[0]


def evaluate_encoder_vectors(params: Params, bundle, data: SettingData, split: str = "test",
                             max_users: int | None = None, meter: CostMeter | None = None):
    """Metrics, the item vectors they were computed with (so callers need not encode twice) and the
    0-based rank of each row's target."""
    was_training = bundle.encoder.training
    bundle.encoder.eval()
    rows = select_rows(data, split, max_users, params.eval.seed)
    meter = meter or CostMeter(params.cost)
    with meter.phase("encode_items"):
        items = encode_items(bundle, len(data.items), params.eval.batch_size)
    with meter.phase("encode_users"):
        users = encode_histories(bundle, [np.asarray(h) for h in rows["history"]], params.eval.batch_size)
    with meter.phase("rank"):
        ranks = rank_rows(params, vector_scores(users, items), rows, data)
    bundle.encoder.train(was_training)
    return breakdown(rows, ranks, params.eval.ks), items, ranks


def popularity_scores(data: SettingData) -> ScoreFn:
    """Training-frequency popularity within the setting's training data (per domain by construction)."""
    counts = torch.from_numpy(np.bincount(data.seq_values, minlength=len(data.items)).astype(np.float32))

    def score(rows: np.ndarray, start: int, end: int) -> torch.Tensor:
        return counts[start:end].expand(len(rows), end - start).clone()
    return score


@torch.no_grad()
def query_latency(bundle, items: torch.Tensor, rows: pd.DataFrame, data: SettingData, n: int = 50) -> dict:
    """One user at a time: encode the history sentence, score the domain, take the top 10."""
    times = []
    for hist, target in zip(rows["history"][:n], rows["target"][:n]):
        t0 = time.perf_counter()
        user = encode_histories(bundle, [np.asarray(hist)], 1)
        start, end = next(r for r in data.domain_ranges.values() if r[0] <= target < r[1])
        (user @ items[start:end].T).topk(min(10, end - start))
        times.append(time.perf_counter() - t0)
    return latency_percentiles(times) if times else {}


def write_ranks(path, rows: pd.DataFrame, ranks: dict[str, np.ndarray]) -> None:
    """Each target's 0-based rank per model, one row per eval row: what paired comparisons and intervals
    over users are computed from (metrics_<split>.json holds only the means)."""
    table = rows[["user_idx", "target", "domain", "group", "history_len"]].copy()
    for model, values in ranks.items():
        table[f"rank_{model}"] = np.asarray(values, dtype=np.int64)
    table.to_parquet(path, index=False)


def write_summaries(run_dir, split: str, results: dict) -> None:
    """Flat files for `dvc metrics` (overall per model) and `dvc plots` (per model and domain)."""
    summary = {model: res["overall"] for model, res in results.items()}
    (run_dir / f"summary_{split}.json").write_text(json.dumps(summary, indent=2))
    rows = [{"model": model, "domain": domain, **values}
            for model, res in results.items() for domain, values in res["by_domain"].items()]
    pd.DataFrame(rows).to_csv(run_dir / f"domains_{split}.csv", index=False)


def evaluate(params: Params, models: tuple[str, ...] = MODELS, split: str = "test") -> dict:
    from ..model.bundle import build_bundle, load_weights
    from ..model.encoder import parameter_counts

    cfg = params.train
    data = load_setting(DataLayout(params.data_root).prepared, cfg.setting, cfg.domain)
    run_dir = params.resolve(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = select_rows(data, split, None, params.eval.seed)
    results, costs, ranks = {}, {}, {}
    for model in models:
        meter = CostMeter(params.cost)
        if model == "popularity":
            with meter.phase("rank"):
                ranks[model] = rank_rows(params, popularity_scores(data), rows, data)
            results[model] = breakdown(rows, ranks[model], params.eval.ks)
            continue
        if model in ("sasrec", "seqhead"):
            from ..baselines.sasrec import evaluate_sasrec, load_sasrec

            with meter.phase("load"):
                sasrec = load_sasrec(params, len(data.items), model)
            with meter.phase("rank"):
                results[model], ranks[model] = evaluate_sasrec(sasrec, rows, data, params, return_ranks=True)
            costs[model] = meter.record(sasrec, kind="eval", extra={"model": model})
            continue
        with meter.phase("load"):
            bundle = build_bundle(params, data.items, tuning=None if model == "llmrec" else "fpft")
            if model == "llmrec":
                load_weights(bundle.encoder, run_dir / "weights.safetensors")
            bundle.encoder.to(best_device())
        results[model], items, ranks[model] = evaluate_encoder_vectors(params, bundle, data, split, meter=meter)
        record = meter.record(bundle.encoder, kind="eval", extra={"model": model})
        record["items_encoded_per_s"] = round(len(data.items) / max(meter.seconds("encode_items"), 1e-9), 1)
        record["query_latency"] = query_latency(bundle, items, rows, data)
        record["parameters_total"] = parameter_counts(bundle.encoder)[0]
        costs[model] = record
    out = {"split": split, "protocol": params.eval.protocol, "setting": cfg.setting, "domain": cfg.domain,
           "users": int(len(rows)), "models": results, "provenance": provenance(EXPERIMENT_CODE)}
    if params.eval.protocol == "sampled":
        out["sampled_negatives"] = params.eval.sampled_negatives
    (run_dir / f"metrics_{split}.json").write_text(json.dumps(out, indent=2))
    write_ranks(run_dir / f"ranks_{split}.parquet", rows, ranks)
    write_summaries(run_dir, split, results)
    for record in costs.values():
        record["provenance"] = out["provenance"]
    cost_name = "cost_eval.json" if split == "test" else f"cost_eval_{split}.json"  # the test record stays
    (run_dir / cost_name).write_text(json.dumps(costs, indent=2))
    return out

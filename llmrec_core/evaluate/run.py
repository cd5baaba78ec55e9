"""Evaluate the models of `eval.models` on one data setting and split: LLM-Rec (tuned or zero-shot), the
sequence head, SASRec and popularity; writes metrics, per-target ranks and cost records to the run folder.

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
from ..cost import CostMeter, latency_percentiles, parameter_counts
from ..data.layout import DataLayout
from ..data.settings import SettingData, load_setting
from ..model.inference import best_device, encode_histories, encode_items
from ..provenance import EXPERIMENT_CODE, provenance
from .metrics import breakdown
from .ranking import ScoreFn, rank_rows, select_rows, vector_scores
from .sequence import evaluate_sasrec
from .trained import lm_encoder, load_sasrec

MODELS = ("llmrec", "zero_shot", "seqhead", "seqhead_served", "sasrec", "popularity")


def evaluate_encoder(params: Params, bundle, data: SettingData, split: str = "test",
                     max_users: int | None = None, meter: CostMeter | None = None) -> dict:
    """Metrics of an LM encoder (training's validation): evaluate_encoder_vectors without the vectors."""
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
    counts = torch.from_numpy(data.train_counts().astype(np.float32))

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
    """`llmrec evaluate`: rank the `split` targets of the run's setting with each model of `models`; reads the
    prepared data and the run's weights, writes metrics_<split>.json, ranks_<split>.parquet, summary_<split>.json,
    domains_<split>.csv and the cost record to `train.run_dir`."""
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
        if model in ("sasrec", "seqhead", "seqhead_served"):
            served = params.index if model == "seqhead_served" else None  # the offset serving adds, or none
            with meter.phase("load"):
                sasrec = load_sasrec(params, len(data.items), "sasrec" if model == "sasrec" else "seqhead")
            with meter.phase("rank"):
                results[model], ranks[model] = evaluate_sasrec(sasrec, rows, data, params, return_ranks=True,
                                                               served=served)
            costs[model] = meter.record(sasrec, kind="eval", extra={"model": model})
            continue
        with meter.phase("load"):
            bundle = lm_encoder(params, data.items, tuned=model == "llmrec")
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

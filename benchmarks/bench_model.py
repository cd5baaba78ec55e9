"""Model benchmarks (make bench-model): ranking speed, training and encoding throughput, RecBole side by side.

Sections (each in its own process, so peak RSS is per section):
  ranking     10k users x 100k items, dim 384 (random unit vectors): full ranking top-50 with the
              evaluation code (chunked torch matmul + top-k) and with the faiss serving index.
              Target on 2 CPU cores: < 20 s, < 4 GB peak RSS.
  ann         the approximate (HNSW) index `llmrec index` builds for large catalogues, 1M items x 384
              (clustered synthetic vectors): recall@10 against exact search (all items and one domain of
              10), build time, memory, single-query p50/p95/p99, adding items. Target: recall@10 >= 0.95,
              p95 < 10 ms on 2 CPU cores.
  throughput  all-MiniLM-L6-v2 on the embedded sample: training samples/s for FPFT (with the item tower
              trained, and cached: `train.item_tower`) and LoRA, and item titles encoded per second.
  step_cost   MiniLM FPFT at configs/ml-100k.yaml's shape on ml-100k (../shared): training samples/s over the
              same steps for the default step and each lever that makes a step cheaper (the cached item
              tower, `train.item_tower`; frozen embeddings and lowest blocks, `train.frozen_layers`).
              Target: >= 2x the default.
  sizes       random-init OPT-style decoders (~40M, 125M, 350M, and 1.3B on a GPU): training samples/s,
              peak memory, MFU (GPU) for FPFT and LoRA, and titles encoded per second. Cost only: random
              weights say nothing about quality.
  recbole     RecBole's SASRec beside ours on ml-100k (see bench_recbole.py; RecBole goes into its own
              virtualenv, never into the project's).
Results: bench/model/<section>.json and the committed reports/benchmarks/<section>_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "model"


def machine() -> dict:
    import torch

    return {"machine": platform.machine(), "processor": platform.processor(), "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}


def publish(name: str, result: dict) -> Path:
    """Write bench/model/<name>.json and the committed copy reports/benchmarks/<name>_<device>.json,
    which `llmrec-lab report` reads (device: cpu, or the GPU's name)."""
    gpu = result.get("machine", {}).get("gpu")
    device = "".join(c if c.isalnum() else "-" for c in gpu.lower()) if gpu else "cpu"
    published = REPO / "reports" / "benchmarks" / f"{name}_{device}.json"
    for path in (OUT / f"{name}.json", published):  # in one step each: a bench beside this one may publish too
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(result, indent=2))
        os.replace(partial, path)
    return published


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float:
    return round(int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20, 1)


def bench_ranking(users: int, items: int, dim: int, k: int) -> dict:
    import numpy as np
    import torch

    from llmrec_core.evaluate.ranking import top_k, vector_scores
    from llmrec_core.serve.index import ItemIndex

    gen = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(users, dim, generator=gen), dim=1)
    v = torch.nn.functional.normalize(torch.randn(items, dim, generator=gen), dim=1)
    score = vector_scores(u, v)
    started = time.perf_counter()
    ids = [top_k(score, np.arange(s, min(users, s + 1024)), 0, items, k)[0] for s in range(0, users, 1024)]
    torch_s = time.perf_counter() - started
    rss_torch = peak_rss_mb()
    import pandas as pd

    catalog = pd.DataFrame({"item_id": np.arange(items).astype(str), "domain": "d", "title": "", "added": ""})
    started = time.perf_counter()
    index = ItemIndex.build(v.numpy(), catalog, {})
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    faiss_ids, _ = index.search(u.numpy(), k)
    faiss_s = time.perf_counter() - started
    agree = float((np.sort(np.concatenate(ids), axis=1) == np.sort(faiss_ids, axis=1)).all(axis=1).mean())
    return {"users": users, "items": items, "dim": dim, "k": k, "torch_topk_s": round(torch_s, 2),
            "peak_rss_mb_after_torch": rss_torch, "faiss_build_s": round(build_s, 3), "faiss_search_s": round(faiss_s, 2),
            "faiss_equals_torch_fraction": agree, "peak_rss_mb": peak_rss_mb(), "target": "< 20 s, < 4096 MB"}


def clustered_unit_vectors(n: int, dim: int, clusters: int, spread: float, rng) -> "np.ndarray":
    """Unit vectors around `clusters` random centres (cosine to the centre ~ 1/sqrt(1 + spread^2)): a stand-in
    for text embeddings, whose neighbours are clustered; uniform random vectors have no neighbours to find."""
    import numpy as np

    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: the float64 noise of 1M x 384 alone would be 3 GB
        m = min(n, start + 100_000) - start
        block = centres[rng.integers(0, clusters, m)] + spread / np.sqrt(dim) * rng.standard_normal((m, dim))
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _latencies_ms(search, queries) -> dict:
    import numpy as np

    times = []
    for q in queries:
        started = time.perf_counter()
        search(q[None, :])
        times.append((time.perf_counter() - started) * 1000)
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


def bench_ann(items: int, dim: int, queries: int, k: int) -> dict:
    """The approximate index `llmrec index` builds above `index.exact_max_items` items, against exact search."""
    import faiss
    import numpy as np
    import pandas as pd

    from llmrec_core.config import IndexConfig
    from llmrec_core.serve.index import ItemIndex, index_kind

    rng = np.random.default_rng(0)
    spread, clusters, domains = 0.8, max(10, items // 1000), 10
    vectors = clustered_unit_vectors(items, dim, clusters, spread, rng)
    q = vectors[rng.integers(0, items, queries)] + 0.5 / np.sqrt(dim) * rng.standard_normal((queries, dim))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    catalog = pd.DataFrame({"item_id": np.arange(items).astype(str), "domain": np.arange(items) % domains,
                            "title": "", "added": ""})
    rss_vectors = peak_rss_mb()
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    started = time.perf_counter()
    _, truth = exact.search(q, k)
    exact_batch_s = time.perf_counter() - started
    exact_latency = _latencies_ms(lambda x: exact.search(x, k), q[:100])
    allowed = np.flatnonzero(catalog["domain"].to_numpy() == 3)
    sel = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed.astype(np.int64)))
    _, truth_domain = exact.search(q, k, params=sel)
    del exact

    cfg = IndexConfig()
    rss_before = current_rss_mb()
    started = time.perf_counter()
    index = ItemIndex.build(vectors, catalog, {}, cfg)
    build_s = time.perf_counter() - started
    rss_built = current_rss_mb()
    found, _ = index.search(q, k)
    found_domain, _ = index.search(q, k, allowed)

    def recall(a, b):
        return round(float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)])), 4)

    started = time.perf_counter()
    new_ids = index.add(vectors[:1000] * -1, catalog.iloc[:1000].assign(item_id=[f"new{i}" for i in range(1000)]))
    add_s = time.perf_counter() - started
    new_found = float(np.mean(index.search(vectors[:1000] * -1, 1)[0].ravel() == new_ids))
    return {
        "items": items, "dim": dim, "queries": queries, "k": k, "index": index_kind(items, cfg),
        "rule": f"exact up to index.exact_max_items={cfg.exact_max_items} items, HNSW above",
        "hnsw": index.meta.get("hnsw"),
        "data": f"synthetic clustered unit vectors ({clusters} clusters, spread {spread}); queries near items",
        "recall@10_vs_exact": recall(found, truth),
        "recall@10_vs_exact_one_domain_of_10": recall(found_domain, truth_domain),
        "build_s": round(build_s, 1), "index_memory_mb": round(rss_built - rss_before, 1),
        "vectors_mb": round(vectors.nbytes / 2**20, 1), "peak_rss_mb": peak_rss_mb(),
        "rss_mb_with_vectors": rss_vectors, "load_average_1min": round(os.getloadavg()[0], 2),
        "single_query": _latencies_ms(lambda x: index.search(x, k), q),
        "single_query_one_domain": _latencies_ms(lambda x: index.search(x, k, allowed), q[:300]),
        "exact_single_query": exact_latency, "exact_batch_s_per_query_ms": round(exact_batch_s / queries * 1000, 3),
        "add_1000_items_s": round(add_s, 3), "added_items_found_fraction": new_found,
        "targets": "recall@10 >= 0.95, single-query p95 < 10 ms",
    }


def _sample_params(workdir: Path, extra: tuple[str, ...] = (), **train):
    """The repo's params (the embedded sample) with outputs under `workdir`, via --set style overrides."""
    from llmrec_core.config import load_params

    overrides = [f"data.root={workdir / 'data'}", f"validation.results_dir={workdir / 'gx'}", *extra]
    return load_params(REPO / "params.yaml", overrides + [f"train.{k}={v}" for k, v in train.items()])


def _prepare(params):
    """Ingest, validate and prepare the data of `params` (as the pipeline's first stages do); its items."""
    import pandas as pd

    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.layout import DataLayout
    from llmrec_core.data.prepare import prepare
    from llmrec_core.data.validate import validate

    ingest(params), validate(params), prepare(params)
    return pd.read_parquet(DataLayout(params.data_root).prepared / "items.parquet")


def bench_throughput(steps: int, batch: int) -> dict:
    from llmrec_core.train.loop import lm_bundle
    from llmrec_core.model.inference import encode_items
    from llmrec_core.train.loop import train

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        items = _prepare(_sample_params(work))
        for name, tuning, tower in (("fpft", "fpft", "trained"), ("fpft-cached", "fpft", "cached"),
                                    ("lora", "lora", "trained")):
            # the cached item tower re-encodes the catalogue every 20 steps, as configs/ml-100k.yaml's runs do
            params = _sample_params(work, tuning=tuning, max_steps=steps, batch_size=batch, item_tower=tower,
                                    item_bank_refresh_steps=20, run_dir=str(work / "runs" / name),
                                    checkpoint_every=10_000)
            record = train(params, show_progress=False)["cost"]
            bundle = lm_bundle(params, items, tuning=tuning)
            bundle.encoder.eval()
            started = time.perf_counter()
            encode_items(bundle, len(items), 256)
            encode_s = time.perf_counter() - started
            started = time.perf_counter()
            encode_items(bundle, len(items), 256, by_length=True)  # what `llmrec index` does
            sorted_s = time.perf_counter() - started
            results[name] = {"item_tower": tower, "parameters_total": record["parameters_total"],
                               "parameters_trainable": record["parameters_trainable"],
                               "train_samples_per_s": record["samples_per_s"], "train_tokens_per_s": record["tokens_per_s"],
                               "peak_host_mb": record["peak_host_mb"], "steps": steps, "batch_size": batch,
                               "titles_encoded_per_s": round(len(items) / encode_s, 1),
                               "titles_encoded_per_s_length_sorted": round(len(items) / sorted_s, 1)}
    return results


STEP_LEVERS = {  # name: train overrides; each lever is measured against `trained`, the default step
    "trained": [],
    "cached": ["train.item_tower=cached", "train.item_bank_refresh_steps=20"],
    "frozen-embeddings": ["train.frozen_layers=0"],
    "frozen-3": ["train.frozen_layers=3"],
    "frozen-4": ["train.frozen_layers=4"],
}


def bench_step_cost(steps: int) -> dict:
    """Training samples/s at configs/ml-100k.yaml's shape on ml-100k (../shared) for each lever that makes a step
    cheaper: the default step, the cached item tower (re-encoded every 20 steps, as the report's runs do), and
    frozen embeddings / lowest blocks. The same steps and examples each."""
    from llmrec_core.config import load_params
    from llmrec_core.train.loop import train

    results = {"params": "configs/ml-100k.yaml", "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def params(name: str):
            return load_params(REPO / "configs" / "ml-100k.yaml", [
                f"data.root={work / 'data'}", f"validation.results_dir={work / 'gx'}", f"train.max_steps={steps}",
                f"train.run_dir={work / name}", "train.checkpoint_every=100000", "eval.max_valid_users=50",
                *STEP_LEVERS[name]])

        _prepare(params("trained"))
        for name in STEP_LEVERS:
            record = train(params(name), show_progress=False)["cost"]
            results[name] = {"overrides": STEP_LEVERS[name], "train_samples_per_s": record["samples_per_s"],
                             "train_tokens_per_s": record["tokens_per_s"],
                             "train_seconds": record["seconds_by_phase"]["train"],
                             "parameters_trainable": record["parameters_trainable"], "batch_size": record["batch_size"],
                             "user_max_tokens": record["user_max_tokens"], "peak_host_mb": record["peak_host_mb"]}
    baseline = results["trained"]["train_samples_per_s"]
    results["speedup_over_trained"] = {name: round(results[name]["train_samples_per_s"] / baseline, 2)
                                       for name in STEP_LEVERS if name != "trained"}
    return results


def bench_sizes(steps: int, batch: int, names: list[str]) -> dict:
    import torch

    from llmrec_core.model.inference import encode_items
    from llmrec_core.train.loop import lm_bundle
    from llmrec_core.model.random_init import write_random_opt
    from llmrec_core.train.loop import train

    gpu = torch.cuda.is_available()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        items = _prepare(_sample_params(work))
        for name in names:
            model_dir = write_random_opt(name, work / "models" / name)
            for tuning in ("fpft", "lora"):
                if gpu:
                    torch.cuda.reset_peak_memory_stats()
                # the end-of-training validation is not what is measured: keep it small for the big shapes
                params = _sample_params(work, ("eval.max_valid_users=32", f"model.name_or_path={model_dir}",
                                               "model.pooling=last"), tuning=tuning, max_steps=steps, batch_size=batch,
                                        run_dir=str(work / "runs" / f"{name}-{tuning}"), checkpoint_every=10_000)
                try:
                    record = train(params, show_progress=False)["cost"]
                except torch.OutOfMemoryError:
                    results[f"{name}/{tuning}"] = {"model": name, "tuning": tuning, "error": "out of memory"}
                    continue
                bundle = lm_bundle(params, items, tuning=tuning)
                bundle.encoder.eval()
                if gpu:
                    bundle.encoder.cuda()
                n_titles = len(items) if gpu else min(len(items), 512)  # a rate: a slice is enough on CPU
                started = time.perf_counter()
                encode_items(bundle, n_titles, 256)
                encode_s = time.perf_counter() - started
                # MFU: 6 * params * tokens for a training step (2 forward + 4 backward), against bf16 peak
                flops = 6 * record["parameters_total"] * record["tokens_per_s"]
                peak = PEAK_BF16_FLOPS.get(torch.cuda.get_device_name(0)) if gpu else None
                results[f"{name}/{tuning}"] = {
                    "model": name, "tuning": tuning, "parameters_total": record["parameters_total"],
                    "parameters_trainable": record["parameters_trainable"],
                    "train_samples_per_s": record["samples_per_s"], "train_tokens_per_s": record["tokens_per_s"],
                    "peak_host_mb": record["peak_host_mb"], "peak_gpu_mb": record["peak_gpu_mb"],
                    "mfu": round(flops / peak, 4) if peak else None, "steps": steps, "batch_size": batch,
                    "titles_encoded_per_s": round(n_titles / encode_s, 1), "precision": "bf16" if gpu else "fp32"}
                del bundle
    return results


# dense bf16 peak FLOP/s per device (vendor datasheets)
PEAK_BF16_FLOPS = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100-SXM4-80GB": 312e12}


def run_section(name: str, args) -> dict:
    """Each section in a fresh interpreter so its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--only", name, "--steps", str(args.steps), "--batch", str(args.batch),
           "--sizes", args.sizes, "--ann-items", str(args.ann_items)]
    subprocess.run(cmd, check=True)
    return json.loads((OUT / f"{name}.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["ranking", "ann", "throughput", "step_cost", "sizes", "recbole"])
    ap.add_argument("--ann-items", type=int, default=1_000_000)
    ap.add_argument("--sections", default="ranking,throughput,step_cost,recbole")
    ap.add_argument("--steps", type=int, default=12, help="training steps per tuning mode")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sizes", default="opt-40m,opt-125m,opt-350m",
                    help="random-init shapes for the sizes section (add opt-1.3b on a GPU)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only:
        if args.only == "ranking":
            result = bench_ranking(10_000, 100_000, 384, 50)
        elif args.only == "ann":
            result = bench_ann(args.ann_items, 384, 1000, 10)
        elif args.only == "throughput":
            result = bench_throughput(args.steps, args.batch)
        elif args.only == "step_cost":
            result = bench_step_cost(max(args.steps, 40))
        elif args.only == "sizes":
            result = bench_sizes(args.steps, args.batch, args.sizes.split(","))
        else:
            subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_recbole.py")], check=True)
            return
        result["machine"] = machine()
        publish(args.only, result)
        return
    summary = {name: run_section(name, args) for name in args.sections.split(",")}
    (OUT / "results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

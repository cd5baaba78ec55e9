"""Model benchmarks (make bench-model): ranking speed, training and encoding throughput, RecBole side by side.

Sections (each in its own process, so peak RSS is per section):
  ranking     10k users x 100k items, dim 384 (random unit vectors): full ranking top-50 with the
              evaluation code (chunked torch matmul + top-k) and with the faiss serving index.
              Target on 2 CPU cores: < 20 s, < 4 GB peak RSS.
  throughput  all-MiniLM-L6-v2 on the embedded sample: training samples/s for FPFT and LoRA, and item
              titles encoded per second.
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
    which `llmrec report` reads (device: cpu, or the GPU's name)."""
    gpu = result.get("machine", {}).get("gpu")
    device = "".join(c if c.isalnum() else "-" for c in gpu.lower()) if gpu else "cpu"
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
    published = REPO / "reports" / "benchmarks" / f"{name}_{device}.json"
    published.parent.mkdir(parents=True, exist_ok=True)
    published.write_text(json.dumps(result, indent=2))
    return published


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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


def _sample_params(workdir: Path, extra: tuple[str, ...] = (), **train):
    """The repo's params (the embedded sample) with outputs under `workdir`, via --set style overrides."""
    from llmrec_core.config import load_params

    overrides = [f"data.root={workdir / 'data'}", f"validation.results_dir={workdir / 'gx'}", *extra]
    return load_params(REPO / "params.yaml", overrides + [f"train.{k}={v}" for k, v in train.items()])


def bench_throughput(steps: int, batch: int) -> dict:
    import pandas as pd

    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.prepare import prepare
    from llmrec_core.data.validate import validate
    from llmrec_core.evaluate.run import encode_items
    from llmrec_core.model.bundle import build_bundle
    from llmrec_core.train.loop import train

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = _sample_params(work)
        ingest(base), validate(base), prepare(base)
        items = pd.read_parquet(work / "data" / "prepared" / "items.parquet")
        for tuning in ("fpft", "lora"):
            params = _sample_params(work, tuning=tuning, max_steps=steps, batch_size=batch,
                                    run_dir=str(work / "runs" / tuning), checkpoint_every=10_000)
            record = train(params, show_progress=False)["cost"]
            bundle = build_bundle(params, items, tuning=tuning)
            bundle.encoder.eval()
            started = time.perf_counter()
            encode_items(bundle, len(items), 256)
            encode_s = time.perf_counter() - started
            results[tuning] = {"parameters_total": record["parameters_total"],
                               "parameters_trainable": record["parameters_trainable"],
                               "train_samples_per_s": record["samples_per_s"], "train_tokens_per_s": record["tokens_per_s"],
                               "peak_host_mb": record["peak_host_mb"], "steps": steps, "batch_size": batch,
                               "titles_encoded_per_s": round(len(items) / encode_s, 1)}
    return results


def bench_sizes(steps: int, batch: int, names: list[str]) -> dict:
    import pandas as pd
    import torch

    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.prepare import prepare
    from llmrec_core.data.validate import validate
    from llmrec_core.evaluate.run import encode_items
    from llmrec_core.model.bundle import build_bundle
    from llmrec_core.model.random_init import write_random_opt
    from llmrec_core.train.loop import train

    gpu = torch.cuda.is_available()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = _sample_params(work)
        ingest(base), validate(base), prepare(base)
        items = pd.read_parquet(work / "data" / "prepared" / "items.parquet")
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
                bundle = build_bundle(params, items, tuning=tuning)
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
           "--sizes", args.sizes]
    subprocess.run(cmd, check=True)
    return json.loads((OUT / f"{name}.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["ranking", "throughput", "sizes", "recbole"])
    ap.add_argument("--sections", default="ranking,throughput,recbole")
    ap.add_argument("--steps", type=int, default=12, help="training steps per tuning mode")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sizes", default="opt-40m,opt-125m,opt-350m",
                    help="random-init shapes for the sizes section (add opt-1.3b on a GPU)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only:
        if args.only == "ranking":
            result = bench_ranking(10_000, 100_000, 384, 50)
        elif args.only == "throughput":
            result = bench_throughput(args.steps, args.batch)
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

"""Load test of `llmrec serve` with a 100k-item index (make bench-serve; on demand, not in CI).

The index holds ml-100k's items, encoded by MiniLM, plus synthetic items with random unit vectors up to
`--items` (100,000), spread over the same domains: the search and the per-domain filter then run over a
catalogue of that size, while known users' histories are real. The index is untuned MiniLM's, which
costs the same per query as a tuned one (same network). A real `llmrec serve` process answers
`POST /recommend {"user": <random known user>, "k": 10}` from concurrent clients (httpx, asyncio) at
each concurrency level; throughput, latency percentiles and failed requests go to
reports/benchmarks/serve_<device>.json. Needs ml-100k prepared (`make report-ml100k` or its data stages).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "serve"
PARAMS = REPO / "configs" / "ml-100k.yaml"


def build_index(items_total: int, seed: int = 0) -> dict:
    import pandas as pd

    from llmrec_core.config import load_params
    from llmrec_core.data.layout import DataLayout
    from llmrec_core.model.inference import encode_items
    from llmrec_core.serve.index import ItemIndex
    from llmrec_core.serve.recommend import index_dir
    from llmrec_core.evaluate.trained import lm_encoder

    params = load_params(PARAMS, [f"train.run_dir={WORK / 'run'}"])
    prepared = DataLayout(params.data_root).prepared
    if not (prepared / "items.parquet").is_file():
        sys.exit(f"{prepared}: no prepared ml-100k; run the data stages with --params {PARAMS} first")
    items = pd.read_parquet(prepared / "items.parquet")
    real = encode_items(lm_encoder(params, items, tuned=False), len(items), params.eval.batch_size).numpy()
    extra = max(items_total - len(items), 0)
    rng = np.random.default_rng(seed)
    synthetic = rng.standard_normal((extra, real.shape[1])).astype(np.float32)
    synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
    domains = items["domain"].unique()
    fake = pd.DataFrame({"domain": domains[np.arange(extra) % len(domains)]})
    fake["item_id"] = fake["domain"] + ":synthetic-" + pd.Series(np.arange(extra)).astype(str)
    fake["title"] = "synthetic item " + pd.Series(np.arange(extra)).astype(str)
    catalog = pd.concat([items.assign(added="prepared"), fake.assign(added="synthetic")], ignore_index=True)
    meta = {"model": params.model.name_or_path, "tuned": False, "weights_sha256": None,
            "built_at": time.strftime("%Y-%m-%d %H:%M:%S"), "bench": "synthetic items beyond the real ones"}
    started = time.perf_counter()
    index = ItemIndex.build(np.concatenate([real, synthetic]), catalog, meta)
    index.save(index_dir(params))
    return {"items": len(catalog), "real_items": len(items), "dim": int(real.shape[1]),
            "build_seconds": round(time.perf_counter() - started, 3), "users": str(prepared / "users.parquet")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, users: list[str], concurrency: int, requests: int, seed: int) -> dict:
    import httpx

    rng = np.random.default_rng(seed)
    bodies = [{"user": users[i], "k": 10} for i in rng.integers(0, len(users), requests)]
    latencies, failures = [], 0
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(client):
        nonlocal failures
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                response = await client.post(f"{url}/recommend", json=body)
                ok = response.status_code == 200 and len(response.json()["items"]) == 10
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            failures += not ok

    async with httpx.AsyncClient(timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": requests, "failed": int(failures),
            "throughput_rps": round(requests / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=300, help="per concurrency level (after 20 warm-up requests)")
    args = ap.parse_args()

    import httpx
    import pandas as pd
    import torch

    index = build_index(args.items)
    users = pd.read_parquet(index.pop("users"))["user_id"].astype(str).tolist()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "llmrec_core", "serve", "--params", str(PARAMS), "--set",
                               f"train.run_dir={WORK / 'run'}", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            sys.exit("llmrec serve did not become healthy in 120 s")
        asyncio.run(load(url, users, 1, 20, seed=99))  # warm-up
        load_before = os.getloadavg()
        levels = [asyncio.run(load(url, users, int(c), args.requests, seed=int(c)))
                  for c in args.concurrency.split(",")]
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "machine": {"device": "cpu", "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M"),
                    "load_average_1m_before": round(load_before[0], 2)},
        "server": "llmrec serve (uvicorn, one process), untuned MiniLM encoding the user's last titles, "
                  "exact faiss inner-product search", "index": index, "request": {"user": "random known", "k": 10},
        "levels": levels,
    }
    out = REPO / "reports" / "benchmarks" / "serve_cpu.json"
    out.write_text(json.dumps(result, indent=2))
    for level in levels:
        print(level)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

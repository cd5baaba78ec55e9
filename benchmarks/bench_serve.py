"""Load test of `llmrec serve` with a 100k-item index, the sequence head and the LM (make bench-serve; on demand).

For each model (`--models`: seqhead, the default that serves, and llmrec, the LM alone) the index holds ml-100k's
items as that model embeds them plus synthetic items up to `--items` (100,000), spread over the same domains:
the search and the per-domain filter then run over a catalogue of that size, while known users' histories are
real. The head is trained on ml-100k into bench/serve/head (`llmrec train --model seqhead`, the base config's
architecture over the pre-trained LM's title vectors, two epochs: what a query costs, not what it is worth); its
synthetic items are new to it, so every query takes the new-item offset path of params.yaml (offset and
calibration). The LM is untuned MiniLM, which costs the same per query as a tuned one (same network).

A real `llmrec serve` process answers `POST /recommend {"user": <random known user>, "k": 10}` from concurrent
clients (httpx, asyncio, in this process: they share the machine's cores with the server). First a cold level
(concurrency 8, users the server has not answered yet: their vectors are computed), then every known user once
(the server keeps their vectors), then each concurrency level. Throughput, latency percentiles, failed requests
and the CPU seconds the server and the client spent go to reports/benchmarks/serve_<device>.json with the
machine's load. Needs ml-100k prepared (`llmrec ingest/validate/prepare --params configs/ml-100k.yaml`).
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
sys.path.insert(0, str(REPO))  # this checkout's llmrec_core, as the `python -m llmrec_core serve` it starts uses
# how each model serves in the benchmark: its run folder, and for the head params.yaml's new-item offset
OVERRIDES = {
    "llmrec": [f"train.run_dir={WORK / 'lm'}", "index.model=llmrec"],
    "seqhead": [f"seqhead.run_dir={WORK / 'head'}", "seqhead.item_vectors=pretrained", "index.model=seqhead",
                "index.new_item_offset=3", "index.new_item_offset_calibration=true"],
}
COMMON = [f"registry.dir={WORK / 'registry'}"]  # no registry: the run folders serve
HEAD_TRAINING = ["seqhead.epochs=2", "seqhead.eval_every=2"]


def _params(model: str):
    from llmrec_core.config import load_params

    return load_params(PARAMS, [*COMMON, *OVERRIDES[model]])


def _synthetic(items, extra: int, norms: np.ndarray, dim: int, seed: int):
    """`extra` synthetic items over the real items' domains, random directions with the real vectors' norms."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((extra, dim)).astype(np.float32)
    vectors *= (rng.choice(norms, extra) / np.linalg.norm(vectors, axis=1))[:, None]
    domains = items["domain"].astype(str).unique()
    fake = pd.DataFrame({"domain": domains[np.arange(extra) % len(domains)]})
    fake["item_id"] = fake["domain"] + ":synthetic-" + pd.Series(np.arange(extra)).astype(str)
    fake["title"] = "synthetic item " + pd.Series(np.arange(extra)).astype(str)
    return vectors, fake.assign(added="synthetic")


def build_index(model: str, items_total: int, seed: int = 0) -> dict:
    """The model's index of ml-100k's items plus synthetic ones up to `items_total`, saved where it serves from."""
    import pandas as pd

    from llmrec_core.data.layout import DataLayout
    from llmrec_core.evaluate.trained import lm_encoder
    from llmrec_core.model.inference import encode_items
    from llmrec_core.serve.index import ItemIndex
    from llmrec_core.serve.recommend import build_index as build_model_index, index_dir
    from llmrec_core.serve.towers import weights_path

    params = _params(model)
    prepared = DataLayout(params.data_root).prepared
    if not (prepared / "items.parquet").is_file():
        sys.exit(f"{prepared}: no prepared ml-100k; run the data stages with --params {PARAMS} first")
    items = pd.read_parquet(prepared / "items.parquet")
    if model == "seqhead":
        if not weights_path(params).is_file():
            print("training the head on ml-100k (bench/serve/head) ...", flush=True)
            subprocess.run([sys.executable, "-m", "llmrec_core", "train", "--model", "seqhead", "--params", str(PARAMS),
                            *[a for o in [*COMMON, *OVERRIDES[model], *HEAD_TRAINING] for a in ("--set", o)]],
                           check=True, cwd=REPO)
        real_index = build_model_index(params, log=lambda *_: None)
        real, meta = real_index.vectors(), real_index.meta
    else:
        real = encode_items(lm_encoder(params, items, tuned=False), len(items), params.eval.batch_size).numpy()
        meta = {"model_kind": "llmrec", "model": params.model.name_or_path, "tuned": False, "weights_sha256": None,
                "pretrained_mix": params.model.pretrained_mix, "build_id": "bench", "log_position": 0}
    synthetic, fake = _synthetic(items, max(items_total - len(items), 0), np.linalg.norm(real, axis=1), real.shape[1],
                                 seed)
    catalog = pd.concat([items.assign(added="prepared"), fake], ignore_index=True)
    started = time.perf_counter()
    index = ItemIndex.build(np.concatenate([real, synthetic]), catalog,
                            {**meta, "built_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "bench": "synthetic items beyond the real ones"}, params.index)
    index.save(index_dir(params))
    return {"items": len(catalog), "real_items": len(items), "dim": int(real.shape[1]), "kind": index.meta["kind"],
            "build_seconds": round(time.perf_counter() - started, 3)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    import httpx

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
                ok = response.status_code == 200 and len(response.json()["items"]) == body["k"]
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            failures += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(bodies), "failed": int(failures),
            "throughput_rps": round(len(bodies) / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "wall_s": round(wall, 3)}


def measured(server_pid: int, url: str, bodies: list[dict], concurrency: int) -> dict:
    """One level, with the CPU seconds per request the server and this client spent and the load around it."""
    server0, client0, load0 = cpu_seconds(server_pid), time.process_time(), os.getloadavg()[0]
    level = asyncio.run(load(url, bodies, concurrency))
    server_s, client_s = cpu_seconds(server_pid) - server0, time.process_time() - client0
    return {**level, "server_cpu_ms_per_request": round(1000 * server_s / len(bodies), 2),
            "server_cores_busy": round(server_s / level["wall_s"], 2),
            "client_cores_busy": round(client_s / level["wall_s"], 2), "load_average_1m_before": round(load0, 2)}


def bench_model(model: str, users: list[str], concurrency: list[int], requests: int, code: Path = REPO,
                warm_all: bool = True, threads: int | None = 1) -> dict:
    """The levels for one model, served by the llmrec_core of the checkout `code` (another commit's, to compare)."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [a for o in [*COMMON, *OVERRIDES[model]] for a in ("--set", o)]
    args += [] if threads is None else ["--threads", str(threads)]
    server = subprocess.Popen([sys.executable, "-m", "llmrec_core", "serve", "--params", str(PARAMS), *args,
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=code,
                              env={**os.environ, "PYTHONPATH": str(code)})
    rng = np.random.default_rng(0)
    try:
        for _ in range(480):
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                sys.exit(f"llmrec serve ({model}) exited with {server.returncode}")
            time.sleep(0.5)
        else:
            sys.exit(f"llmrec serve ({model}) did not become healthy in 240 s")
        order = rng.permutation(len(users))
        cold = [{"user": users[i], "k": 10} for i in order[:requests]]  # none answered before: vectors computed
        cold_level = measured(server.pid, url, cold, 8)
        if warm_all:  # every user once: the server has their vectors
            asyncio.run(load(url, [{"user": users[i], "k": 10} for i in order[requests:]], 8))
        levels = [measured(server.pid, url, [{"user": users[i], "k": 10}
                                             for i in rng.integers(0, len(users), requests)], c)
                  for c in concurrency]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"cold_users": cold_level, "levels": levels}


SERVERS = {
    "seqhead": "the sequence head (4 networks, width 128, 50 items) over pre-trained MiniLM's title vectors; "
               "the synthetic items are new to it: new-item offset with calibration (params.yaml's offset 3)",
    "llmrec": "untuned MiniLM encoding the user's last titles (the LM alone)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--models", default="seqhead,llmrec")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=300, help="per concurrency level")
    ap.add_argument("--server-code", type=Path, default=REPO,
                    help="a checkout whose llmrec_core serves (another commit's, to measure before a change)")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks" / "serve_cpu.json")
    ap.add_argument("--threads", type=int, default=1,
                    help="llmrec serve --threads (0: leave the option out, for code that has none)")
    ap.add_argument("--before", type=Path, help="this benchmark's output for the code before a change, kept with it")
    ap.add_argument("--no-warm-all", dest="warm_all", action="store_false",
                    help="skip asking for every known user once before the levels")
    args = ap.parse_args()

    import pandas as pd
    import torch

    from llmrec_core.data.layout import DataLayout

    load_before = os.getloadavg()[0]
    concurrency = [int(c) for c in args.concurrency.split(",")]
    users = pd.read_parquet(DataLayout(_params("llmrec").data_root).prepared / "users.parquet")["user_id"]
    users = users.astype(str).tolist()
    if len(users) < args.requests:
        sys.exit(f"{len(users)} known users: the cold level needs --requests ({args.requests}) of them")
    results = {}
    for model in args.models.split(","):
        index = build_index(model, args.items)
        print(f"{model}: index {index}", flush=True)
        results[model] = {"server": SERVERS[model], "index": index,
                          **bench_model(model, users, concurrency, args.requests, args.server_code.resolve(),
                                        args.warm_all, args.threads or None)}
        for level in [results[model]["cold_users"], *results[model]["levels"]]:
            print(model, level, flush=True)
    result = {
        "machine": {"device": "cpu", "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M"),
                    "load_average_1m_before": round(load_before, 2)},
        "server": "llmrec serve, one uvicorn process" + (
            ": known users' vectors cached, concurrent queries searched as one batch (one product with every item "
            "vector: exact search)" if args.server_code.resolve() == REPO else f" of the code in {args.server_code}"),
        "server_code": _commit(args.server_code.resolve()),
        "server_torch_threads": args.threads or "torch's default (one per core)",
        "request": {"user": "random known", "k": 10},
        "models": results,
    }
    if args.before:
        result["before"] = json.loads(args.before.read_text())
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _commit(code: Path) -> str:
    """The commit of the checkout that served (with "+changes" when its files differ from it)."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=code, capture_output=True, text=True).stdout.strip()

    if not (code / ".git").exists():
        return str(code)  # files, not a checkout
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no", "llmrec_core") else "")


if __name__ == "__main__":
    main()

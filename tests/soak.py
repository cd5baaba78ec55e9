"""A soak of `llmrec serve`: concurrent /recommend, POST /items and POST /reload against a real server process
that is killed with SIGKILL at random moments and restarted; then a check that every item answered with 200 is
served (found by a search for its title, and in its domain's listing where that fits in one answer), is in
the index a fresh load gives (its own vector finds it), and is in the accepted-items log exactly once.

Used by tests/model/test_soak.py (seconds) and benchmarks/bench_soak.py (minutes).
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

WORDS = ("amber basalt cobalt dune ember fjord garnet harbor indigo juniper kestrel lagoon meadow nebula onyx "
         "prairie quartz raven saffron tundra umber violet willow xenon yarrow zephyr").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `llmrec serve` subprocess on a fixed port, started, killed (SIGKILL) and restarted."""

    def __init__(self, params_path: Path, port: int, log_path: Path):
        self.params_path, self.port, self.log_path = params_path, port, log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 180) -> float:
        """Start the server and wait until /healthz answers; returns the seconds that took."""
        started = time.perf_counter()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llmrec_core", "serve", "--params", str(self.params_path),
                 "--port", str(self.port)],
                env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, stdout=log,
                stderr=subprocess.STDOUT)
        self.starts += 1
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None or time.perf_counter() - started > timeout:
                    self.kill()
                    tail = self.log_path.read_text()[-3000:]
                    raise RuntimeError(f"llmrec serve did not start (start {self.starts}): {tail}")
                time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Tally:
    """What the clients saw; guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter = field(default_factory=Counter)
    acknowledged: dict = field(default_factory=dict)  # item_id -> (domain, title)
    unexpected: list = field(default_factory=list)  # answers that should not happen (a 5xx, a refused retry)
    in_flight: Counter = field(default_factory=Counter)

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n


def _item_worker(base: str, worker: int, tag: str, domains: list[str], tally: Tally, stop: threading.Event,
                 rng: random.Random) -> None:
    """POST /items batches with an Idempotency-Key; a batch without an answer (the server died) is retried with
    the same key until it gets one."""
    client = httpx.Client(base_url=base, timeout=60)
    batch = 0
    while not stop.is_set():
        batch += 1
        key = f"{tag}-w{worker}-b{batch}"
        items = [{"item_id": f"{key}-{i}", "domain": rng.choice(domains),
                  "title": f"{' '.join(rng.sample(WORDS, 3))} {key}-{i}"} for i in range(rng.randint(1, 4))]
        while True:
            with tally.lock:
                tally.in_flight["items"] += 1
            try:
                res = client.post("/items", json={"items": items}, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                tally.count("items_transport_errors")
                if stop.is_set():
                    break  # unanswered at the end: not acknowledged, so not checked
                time.sleep(0.1)
                continue
            finally:
                with tally.lock:
                    tally.in_flight["items"] -= 1
            tally.count(f"items_{res.status_code}")
            if res.status_code == 200:
                body = res.json()
                with tally.lock:
                    for item in items:
                        full_id = f"{item['domain']}:{item['item_id']}"
                        if full_id in body["accepted"]:
                            tally.acknowledged[full_id] = (item["domain"], item["title"])
                break
            if res.status_code >= 500:
                with tally.lock:
                    tally.unexpected.append(f"POST /items {key}: {res.status_code} {res.text[:200]}")
                time.sleep(0.1)
                continue  # the same key again: a batch applied before the error is answered, not refused
            with tally.lock:
                tally.unexpected.append(f"POST /items {key}: {res.status_code} {res.text[:200]}")
            break
    client.close()


def _recommend_worker(base: str, tally: Tally, stop: threading.Event, rng: random.Random) -> None:
    client = httpx.Client(base_url=base, timeout=60)
    while not stop.is_set():
        with tally.lock:
            known = list(tally.acknowledged.values())
        history = [rng.choice(known)[1]] if known and rng.random() < 0.5 else [" ".join(rng.sample(WORDS, 4))]
        try:
            res = client.post("/recommend", json={"history": history, "k": 10})
        except httpx.TransportError:
            tally.count("recommend_transport_errors")
            time.sleep(0.1)
            continue
        tally.count(f"recommend_{res.status_code}")
        if res.status_code >= 500:
            with tally.lock:
                tally.unexpected.append(f"POST /recommend: {res.status_code} {res.text[:200]}")
    client.close()


def _reload_worker(base: str, tally: Tally, stop: threading.Event, every_s: float) -> None:
    client = httpx.Client(base_url=base, timeout=120)
    while not stop.is_set():
        with tally.lock:
            tally.in_flight["reload"] += 1
        try:
            res = client.post("/reload")
            tally.count(f"reload_{res.status_code}")
            if res.status_code != 200:
                with tally.lock:
                    tally.unexpected.append(f"POST /reload: {res.status_code} {res.text[:200]}")
        except httpx.TransportError:
            tally.count("reload_transport_errors")
        finally:
            with tally.lock:
                tally.in_flight["reload"] -= 1
        stop.wait(every_s)
    client.close()


def soak(params_path: Path, duration_s: float, kill_after_s: tuple[float, float], log_path: Path,
         item_workers: int = 2, recommend_workers: int = 2, reload_every_s: float = 0.2, seed: int = 0,
         min_kills: int = 0, progress=lambda message: None) -> dict:
    """Run the soak for `duration_s` (and at least `min_kills` kills), with a SIGKILL uniform(*kill_after_s)
    seconds after each start; then stop the clients, kill once more, restart and check every acknowledged item.
    Returns the figures and the items found missing."""
    from llmrec_core.config import load_params

    params = load_params(params_path)
    rng = random.Random(seed)
    server = Server(params_path, free_port(), log_path)
    start_seconds = [server.start()]
    base = f"http://127.0.0.1:{server.port}"
    domains = httpx.get(base + "/healthz", timeout=30).json()["domains"]
    tally, stop = Tally(), threading.Event()
    tag = f"soak{seed}x{int(time.time())}"
    threads = [threading.Thread(target=_item_worker, args=(base, w, tag, domains, tally, stop,
                                                           random.Random(rng.random())))
               for w in range(item_workers)]
    threads += [threading.Thread(target=_recommend_worker, args=(base, tally, stop, random.Random(rng.random())))
                for _ in range(recommend_workers)]
    threads.append(threading.Thread(target=_reload_worker, args=(base, tally, stop, reload_every_s)))
    began = time.perf_counter()
    for t in threads:
        t.start()
    kills, kills_mid_items, kills_mid_reload = 0, 0, 0
    try:
        while time.perf_counter() - began < duration_s or kills < min_kills:
            time.sleep(rng.uniform(*kill_after_s))
            with tally.lock:
                kills_mid_items += tally.in_flight["items"] > 0
                kills_mid_reload += tally.in_flight["reload"] > 0
            server.kill()
            kills += 1
            start_seconds.append(server.start())
            progress(f"{time.perf_counter() - began:.0f}s: kill {kills}, {len(tally.acknowledged)} items acknowledged")
        time.sleep(kill_after_s[1])  # traffic after the last restart too: retries of killed batches get answers
        stop.set()
        for t in threads:
            t.join(timeout=180)
        server.kill()  # one last kill with nothing in flight, then what a restart serves
        start_seconds.append(server.start())
        missing = check(params, base, tally.acknowledged)
    finally:
        stop.set()
        server.stop()
    elapsed = time.perf_counter() - began
    counts = dict(sorted(tally.counts.items()))
    return {"duration_s": round(elapsed, 1), "kills_under_load": kills, "kills": kills + 1, "kills_with_items_in_flight": kills_mid_items,
            "kills_with_reload_in_flight": kills_mid_reload, "server_starts": server.starts,
            "start_seconds_median": round(float(np.median(start_seconds)), 2),
            "requests": sum(v for k, v in counts.items() if not k.endswith("transport_errors")),
            "responses": counts, "items_acknowledged": len(tally.acknowledged), "items_lost": len(missing["lost"]),
            "missing": missing, "unexpected_answers": tally.unexpected[:20],
            "unexpected_answer_count": len(tally.unexpected)}


def check(params, base: str, acknowledged: dict) -> dict:
    """Each acknowledged item: found by a search for its title and in its domain's listing (server), in a fresh
    load's index where its own vector finds it, and in the log exactly once. Returns the ids failing each."""
    from llmrec_core.serve.item_store import accepted_items
    from llmrec_core.serve.recommend import Recommender

    client = httpx.Client(base_url=base, timeout=60)
    not_by_title = []
    for item_id, (domain, title) in acknowledged.items():
        res = client.post("/recommend", json={"history": [title], "k": 1})
        if res.status_code != 200 or not res.json()["history"][0]["in_catalog"]:
            not_by_title.append(item_id)
    not_listed = []
    for domain in sorted({d for d, _ in acknowledged.values()}):
        listed = client.post("/recommend", json={"history": ["an unrelated title"], "k": 1000, "domain": domain})
        ids = {r["item_id"] for r in listed.json()["items"]}
        if len(ids) < 1000:  # the whole domain fits in one answer
            not_listed += [i for i, (d, _) in acknowledged.items() if d == domain and i not in ids]
    client.close()
    recommender = Recommender.load(params)
    rows = {item_id: row for row, item_id in enumerate(recommender.index.catalog["item_id"])}
    in_index = [i for i in acknowledged if i in rows]
    not_in_index = [i for i in acknowledged if i not in rows]
    if in_index:
        positions = np.array([rows[i] for i in in_index])
        found, _ = recommender.index.search(recommender.index.vectors()[positions], 1)
        not_in_index += [i for i, got, want in zip(in_index, found[:, 0], positions) if got != want]
    logged = Counter(accepted_items(params)["item_id"])
    not_once = [i for i in acknowledged if logged[i] != 1]
    twice = [i for i, n in logged.items() if n > 1]
    lost = sorted(set(not_by_title) | set(not_listed) | set(not_in_index) | set(not_once))
    return {"lost": lost, "not_found_by_title": not_by_title, "not_in_domain_listing": not_listed,
            "not_in_index": not_in_index, "not_logged_once": not_once, "logged_more_than_once": twice}

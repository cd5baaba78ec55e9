"""Memory held per event by one user partition of `prepare` on Ray (ray_prepare.Partition), measured without Ray.

    python benchmarks/partition_memory.py [--events 1000000 2000000] [--events-per-user 10] [--items 1000000]

For each size, generates validated interactions like benchmarks/bench_data.py's events, splits them into one
partition's block files as the stage's split does, then, in a fresh process, instantiates the actor class directly
(the undecorated class: no Ray) and runs the stage's phases in their order: load, the user sample (a cut keeping
every user), duplicates, consecutive repeats, the k-core rounds (this partition's item counts, scaled, standing for
the driver's sums), short users, write_dropped, then kept users and items, index (with the whole catalogue as the
driver sends it) and write_parts. After each phase it prints the process's RSS, the phase's peak RSS and the peak
so far (VmHWM, reset between phases), all above the RSS before load, and the peak so far per event. With two sizes
or more it also prints the peak's growth per event between the two largest: the bytes per event without the fixed
costs (the first Parquet read alone takes some 50 MB: libraries, thread pools).

The default sizes bracket one of the 16 partitions of the 30M benchmark (~1.9M events of ~190k users over a
catalogue of 1M items in 10 domains).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ["Scientific", "Pantry", "Instruments", "Arts", "Office", "Toys", "Garden", "Sports", "Beauty", "Pets"]


def synthetic_validated(path: Path, events: int, users: int, items: int, domains: int, seed: int = 0) -> None:
    """Validated interactions as ingest and validate leave bench_data.py's generated files (the same
    distributions: long-tailed activity, Zipf-like popularity within a domain, 60% of a user's events at home)."""
    rng = np.random.default_rng(seed)
    names = DOMAINS[:domains]
    per_domain = items // domains
    extra = rng.geometric(1.0 / max(1.0, events / users - 4), size=users)
    counts = 5 + (extra * (events - 5 * users) / extra.sum()).astype(np.int64)
    np.add.at(counts, rng.integers(0, users, size=events - counts.sum()), 1)
    user = np.repeat(np.arange(users), counts)
    home = rng.integers(0, domains, size=users)
    domain = np.where(rng.random(events) < 0.6, home[user], rng.integers(0, domains, size=events))
    item = rng.permutation(per_domain)[(per_domain * rng.random(events) ** 2.5).astype(np.int64)]
    order = np.argsort(domain, kind="stable")  # one source file per domain, read in turn
    user, domain, item = user[order], domain[order], item[order]
    user_ids = np.char.add("A", np.char.zfill(np.arange(users).astype(str), 12))
    item_ids = np.char.add(np.asarray(names)[domain], np.char.add(":B", np.char.zfill(item.astype(str), 9)))
    line = np.arange(events) - np.searchsorted(domain, domain)  # line within the domain's file
    table = pa.table({"user_id": pa.array(user_ids[user], pa.string()), "item_id": pa.array(item_ids, pa.string()),
                      "domain": pa.array(np.asarray(names)[domain], pa.string()),
                      "timestamp": 1_300_000_000 + rng.integers(0, 250_000_000, size=events),
                      "rating": rng.integers(1, 6, size=events).astype(float),
                      "source_file": pa.array(np.char.add("/data/bench/raw/", np.char.add(np.asarray(names)[domain],
                                                                                        ".csv")), pa.string()),
                      "source_line": line + 1})
    pq.write_table(table, path, row_group_size=500_000)
    every_item = np.char.add(np.repeat(names, per_domain), np.char.add(":B", np.char.zfill(
        np.tile(np.arange(per_domain), domains).astype(str), 9)))
    pq.write_table(pa.table({"item_id": every_item}), path.with_name("catalogue.parquet"))  # the driver's, at most


def split(validated: Path, scratch: Path, partitions: int) -> dict:
    """The stage's split (ray_filter._split_block, one block per row group) and the driver's file ranks; returns
    what the actor is built with (every domain is selected)."""
    import pandas as pd

    from llmrec_core.data.ray_filter import _split_block

    meta = pq.ParquetFile(validated).metadata
    stats, first = [], 0
    for g in range(meta.num_row_groups):
        stats.append(_split_block(str(validated), [g], first, partitions, str(scratch), g))
        first += meta.row_group(g).num_rows
    sizes = pd.concat([s["domains"] for s in stats]).groupby("domain")["n"].sum().sort_values(ascending=False)
    files = pd.concat([s["files"] for s in stats]).groupby("source_file")["first"].min().sort_values()
    return {"domains": list(sizes.index), "file_rank": {name: k for k, name in enumerate(files.index)}}


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    """The peak RSS (VmHWM) since the last reset_peak: getrusage's ru_maxrss would count the parent's at the fork."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def measure(scratch: Path, setup: dict, min_user: int, min_item: int, count_scale: int) -> dict:
    """The phases on partition 0, in a fresh process; the memory after each. The k-core takes this partition's
    item counts times `count_scale` for the driver's sums (the other partitions' users see the items as often)."""
    from llmrec_core.data import ray_prepare
    from llmrec_core.data.event_filter import LSTR
    from llmrec_core.data.ray_prepare import Partition

    base = rss_mb()
    part = Partition(0, str(scratch), setup["domains"], setup["file_rank"], "mixed")
    phases, events, peak = [], None, 0.0
    reset_peak()

    def mark(name: str, started: float) -> None:
        nonlocal peak
        phase_peak = peak_mb() - base
        peak = max(peak, phase_peak)
        phases.append({"phase": name, "seconds": round(time.perf_counter() - started, 2),
                       "rss_mb": round(rss_mb() - base, 1), "phase_peak_mb": round(phase_peak, 1),
                       "peak_mb": round(peak, 1), "peak_bytes_per_event": round(peak * 2**20 / max(events, 1))})
        reset_peak()

    started = time.perf_counter()
    part.load()
    events = part.size()
    mark("load", started)
    started = time.perf_counter()
    part.user_hashes(0)  # what the driver asks for (and drops here)
    part.sample((np.iinfo(np.uint64).max, "\U0010ffff"), 0, 1)  # a cut keeping every user
    mark("user_hashes + sample", started)
    for name, run in [("drop_duplicates", lambda: part.drop_duplicates(2)),
                      ("drop_repeats", lambda: part.drop_repeats(3))]:
        started = time.perf_counter()
        run()
        mark(name, started)
    started, rounds = time.perf_counter(), 0
    numbered = hasattr(part, "number_items")  # the stage's item numbers (before them, counts by id)
    if numbered:
        part.number_items(part.item_ids)  # this partition's items are the driver's
    while True:
        rounds += 1
        if numbered:
            done = not part.kcore_round(part.item_counts() * count_scale < min_item, min_user, 4)
        else:
            ids, n = _counts(part.item_counts())
            done = not part.kcore_round(ids.filter(pa.array(n * count_scale < min_item)).cast(LSTR), min_user, 4)
        if done:
            break
    mark(f"k-core ({rounds} rounds)", started)
    started = time.perf_counter()
    part.drop_short_users(5)
    part.domain_counts(len(setup["domains"]))
    kept = part.write_dropped()
    mark("drop_short_users + write_dropped", started)
    started = time.perf_counter()
    users = len(part.kept_users())  # sent to the driver
    items = int((part.item_counts() > 0).sum()) if numbered else len(part.kept_items())
    mark("kept_users + kept_items", started)
    # what the driver sends (the catalogue sorted by id; before _by_id, its ids): its making is not counted, it is
    catalogue = pq.read_table(scratch / "catalogue.parquet").column(0).combine_chunks().cast(LSTR)  # every item
    by_id = getattr(ray_prepare, "_by_id", None)
    sent, catalogue_size = (by_id(catalogue) if by_id else catalogue), len(catalogue)
    reset_peak()
    started = time.perf_counter()
    missing, _, _ = part.index(np.arange(users, dtype=np.int32), sent)
    assert missing == 0
    del sent, catalogue  # by_id and the catalogue: the driver's
    mark("index", started)
    started = time.perf_counter()
    part.write_parts(np.zeros(catalogue_size, dtype=np.int8), str(scratch / "prepared"), 20)  # one item group
    mark("write_parts", started)
    return {"events": events, "kept": kept, "users_kept": users, "items_kept": items,
            "rss_before_load_mb": round(base, 1), "phases": phases,
            "peak_bytes_per_event": max(p["peak_bytes_per_event"] for p in phases)}


def _counts(counts) -> tuple[pa.Array, np.ndarray]:
    """item_counts' answer as (ids, counts), whichever form it takes (a DataFrame before the partitions held codes)."""
    if isinstance(counts, tuple):
        return counts
    return pa.array(counts["item_id"]), counts["n"].to_numpy()


def run(events: int, args) -> dict:
    """One size: generate, split, and measure in a fresh process."""
    scratch = Path(tempfile.mkdtemp(prefix="partition-memory-"))
    try:
        validated = scratch / "interactions.parquet"
        synthetic_validated(validated, events, events // args.events_per_user, args.items, args.domains)
        setup = split(validated, scratch, 1)
        validated.unlink()
        result = subprocess.run([sys.executable, __file__, "--scratch", str(scratch), "--measure", json.dumps(setup),
                                 "--min-user", str(args.min_user), "--min-item", str(args.min_item),
                                 "--count-scale", str(args.count_scale)],
                                check=True, capture_output=True, text=True)
        return json.loads(result.stdout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 2_000_000],
                    help="the partition's sizes; with two or more, the peak's growth per event between the two largest")
    ap.add_argument("--events-per-user", type=int, default=10)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--min-user", type=int, default=5)
    ap.add_argument("--min-item", type=int, default=5)
    ap.add_argument("--count-scale", type=int, default=16,
                    help="the driver's item counts as this partition's times this (the 30M benchmark: 16 partitions)")
    ap.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # the fresh process: the setup, as JSON
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.scratch, json.loads(args.measure), args.min_user, args.min_item,
                                 args.count_scale)))
        return
    reports = [run(n, args) for n in sorted(args.events)]
    for report in reports:
        print(f"{report['events']:,} events (RSS before load {report['rss_before_load_mb']} MB)")
        for p in report["phases"]:
            print(f"  {p['phase']:<34} {p['seconds']:>6.2f} s  RSS {p['rss_mb']:>7.1f} MB  phase's peak"
                  f" {p['phase_peak_mb']:>7.1f} MB  peak {p['peak_mb']:>7.1f} MB"
                  f" {p['peak_bytes_per_event']:>5} B/event")
        print("  " + json.dumps({k: v for k, v in report.items() if k != "phases"}))
    if len(reports) > 1:
        small, large = reports[-2], reports[-1]
        growth = {"peak_bytes_per_event_marginal": round(
            (max(p["peak_mb"] for p in large["phases"]) - max(p["peak_mb"] for p in small["phases"])) * 2**20
            / (large["events"] - small["events"]))}
        print(json.dumps(growth))


if __name__ == "__main__":
    main()

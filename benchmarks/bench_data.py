"""Data-stage benchmark (make bench-data, make bench-data-30m, make bench-data-ray).

Generates interactions in the Amazon Reviews 2018 format (ratings CSV + meta JSON per domain): by default
~3M from ~300k users on ~100k items in 5 domains (the paper's scale); `--scale 30m` gives 30M from 3M users
on 1M items in 10 domains. Then runs `llmrec ingest`, `validate` and `prepare` as separate processes and
reports wall time and peak RSS of each. validate reads interactions `data.chunk_rows` at a time and prepare
filters them out of core (DuckDB, spilling past `data.memory_limit_mb`), so peak memory stays under the stated
cap whatever the number of events. Results go to bench/data/<scale>/results-<engine>.json and
reports/benchmarks/data_<scale>_cpu.json, and are printed as a table.
Targets on a 2-core machine: 3M in < 90 s and < 3 GB peak RSS; 30M under a 4 GB peak RSS cap.

`--engine ray` runs ingest, validate and prepare on Ray (data.engine: ray; a local Ray instance unless
`--ray-address`) and records every process's peak RSS (the stage, Ray's workers), sampled, and the engines' phase
timings (interim/engine.json, validated/engine.json, prepared/engine.json); results go to
reports/benchmarks/data_<scale>_ray_cpu.json. Its memory target is checked on the sum of every process's peak (an
upper bound on the machine's), not the driver's; the largest sum of their RSS in one sample
(peak_rss_mb_all_processes_at_once) counts shared pages (Ray's object store) in each process that maps them, and the
machine's used memory over its level before the stage (peak_machine_memory_used_mb) counts them once. `--engine
local ray` runs both on the same generated input, one after the other, each with its own ingest (an engine whose
ingest is not on Ray could share an earlier local one's, hard-linked), so the two are measured under the same
conditions; `benchmarks/project_data_ray.py` projects the Ray figures to
the full Amazon 2018 dump. Measure on an idle machine: Ray starts its workers at niceness 15, so beside
any other work (a training run at niceness 0) they get only what is left, and the engines' times are not comparable
(compare a stage's wall time with its tasks' CPU seconds in engine.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

REPO = Path(__file__).resolve().parents[1]

DOMAINS = ["Scientific", "Pantry", "Instruments", "Arts", "Office", "Toys", "Garden", "Sports", "Beauty", "Pets"]
SCALES = {  # users, items, interactions, domains, target seconds (None: no time target), peak RSS cap in MB
    "300k": (30_000, 10_000, 300_000, 5, None, None),  # a quick check of the benchmark itself
    "3m": (300_000, 100_000, 3_000_000, 5, 90, 3072),
    "30m": (3_000_000, 1_000_000, 30_000_000, 10, None, 4096),
    "100m": (10_000_000, 3_000_000, 100_000_000, 10, None, None),
}
WORDS = np.array("acoustic alloy amber analog archive arrow atlas basic bold bright canvas carbon classic compact "
                 "copper crystal deluxe digital drift eco edge elite ember fusion glide grand harbor heavy horizon "
                 "indigo ivory jet kinetic linen lunar matte metro modern nova oak onyx orbit pixel prime pro quartz "
                 "rapid royal rustic sage sierra silver solar sonic steel stone summit swift terra titan urban velvet "
                 "vintage vivid wave zen".split())
NOUNS = np.array("pen notebook stapler binder guitar string amplifier pedal microscope beaker pipette flask brush "
                 "canvas easel marker paint tea coffee pasta rice sauce spice tape folder desk lamp chair cable "
                 "tuner drum ukulele violin glue scissors ruler calculator".split())


def generate(out: Path, users: int, items: int, interactions: int, domains: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    per_domain = items // len(domains)
    # Each user has 5+ events; activity is long-tailed, popularity Zipf-like within a domain.
    extra = rng.geometric(1.0 / max(1.0, interactions / users - 4), size=users)
    counts = 5 + (extra * (interactions - 5 * users) / extra.sum()).astype(np.int64)
    np.add.at(counts, rng.integers(0, users, size=interactions - counts.sum()), 1)  # exactly `interactions` rows
    user = np.repeat(np.arange(users), counts)
    n = len(user)
    home = rng.integers(0, len(domains), size=users)
    domain = np.where(rng.random(n) < 0.6, home[user], rng.integers(0, len(domains), size=n))
    rank = (per_domain * rng.random(n) ** 2.5).astype(np.int64)  # popular head, every item reachable
    item = rng.permutation(per_domain)[rank]
    t = 1_300_000_000 + rng.integers(0, 250_000_000, size=n)
    user_ids = np.char.add("A", np.char.zfill(np.arange(users).astype(str), 12))
    for d, name in enumerate(domains):
        asins = np.char.add(f"B{d}", np.char.zfill(np.arange(per_domain).astype(str), 8))
        m = domain == d
        table = pa.table({"item": asins[item[m]], "user": user_ids[user[m]],
                          "rating": rng.integers(1, 6, size=int(m.sum())).astype(float), "time": t[m]})
        pacsv.write_csv(table, out / f"{name}.csv", pacsv.WriteOptions(include_header=False))
        titles = [" ".join(w) for w in zip(WORDS[rng.integers(0, len(WORDS), per_domain)],
                                            WORDS[rng.integers(0, len(WORDS), per_domain)],
                                            NOUNS[rng.integers(0, len(NOUNS), per_domain)])]
        with open(out / f"meta_{name}.json", "w") as fh:
            for a, title in zip(asins.tolist(), titles):
                fh.write(json.dumps({"asin": a, "title": title.title(), "category": [name]}) + "\n")


def run_stage(stage: str, params: Path, every_process: bool = False) -> dict:
    """Run `llmrec <stage>` as its own process: wall time and peak RSS (with `every_process`, also each process
    it or a Ray instance starts, sampled every 0.2 s: Ray's workers are not its children)."""
    import threading

    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "llmrec_core", stage, "--params", str(params)],
                            stdout=subprocess.DEVNULL)
    peaks: dict[int, tuple[str, int]] = {}  # pid -> (role, peak RSS MB)
    done = threading.Event()

    def role(cmd: str) -> str:  # Ray retitles a worker by its current task: keep the class or function
        title = cmd.split()[0] if cmd else "?"
        if title.startswith("ray::"):
            return "ray::" + title.removeprefix("ray::").split(":")[-1].split(".")[0]
        return Path(title).name

    at_once = [0]  # the largest sum of the processes' RSS in one sample (shared pages, Ray's object store among
    # them, count in every process that maps them: an upper bound on what they held at that moment)
    used_before = psutil.virtual_memory().used
    machine = [0]  # the machine's used memory over what it used before the stage: a figure without double counts

    def sample() -> None:
        while not done.is_set():
            now = 0
            for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if p.info["pid"] == proc.pid or "ray::" in cmd or "/ray/" in cmd:
                    rss = (p.info["memory_info"].rss if p.info["memory_info"] else 0) >> 20
                    name = "the stage (driver)" if p.info["pid"] == proc.pid else role(cmd)
                    if name == "ray::IDLE" and p.info["pid"] in peaks:
                        name = peaks[p.info["pid"]][0]  # a worker between tasks keeps its last role
                    peaks[p.info["pid"]] = (name, max(rss, peaks.get(p.info["pid"], ("", 0))[1]))
                    now += rss
            at_once[0] = max(at_once[0], now)
            machine[0] = max(machine[0], psutil.virtual_memory().used - used_before)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    if every_process:
        sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{stage} failed")
    result = {"stage": stage, "seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    if every_process:
        sampler.join()
        by_role: dict[str, dict] = {}
        for name, peak in peaks.values():
            entry = by_role.setdefault(name, {"processes": 0, "peak_rss_mb_max": 0})
            entry["processes"] += 1
            entry["peak_rss_mb_max"] = max(entry["peak_rss_mb_max"], peak)
        result["peak_rss_mb_per_process"] = dict(sorted(by_role.items()))
        result["peak_rss_mb_sum_of_processes"] = sum(peak for _, peak in peaks.values())
        result["peak_rss_mb_all_processes_at_once"] = at_once[0]
        result["peak_machine_memory_used_mb"] = machine[0] >> 20
    return result


def run_engine(out: Path, work: str, domains: list[str], args, engine: str, interim_from: Path | None) -> dict:
    """ingest, validate and prepare with `engine`; returns the results summary. With `interim_from`, an engine whose
    ingest is not on Ray takes that local ingest's output, hard-linked, instead of ingesting again (the same files);
    on Ray ingest always runs, so that it is measured."""
    params = {
        "data": {"sources": [{"name": d.lower(), "format": "amazon2018", "domain": d,
                              "interactions": f"raw/{d}.csv", "items": f"raw/meta_{d}.json"} for d in domains],
                 "domains": domains, "root": work, "memory_limit_mb": args.memory_limit_mb,
                 "engine": engine, "partitions": args.partitions, "ray_address": args.ray_address},
        "validation": {"results_dir": f"{work}/gx"},
        "prepare": {"min_user_interactions": 5, "min_item_interactions": 5, "max_history": 20},
    }
    params_path = out / f"params-{engine}.yaml"
    params_path.write_text(yaml.safe_dump(params))
    shutil.rmtree(out / work, ignore_errors=True)
    load_before = os.getloadavg()[0]
    results = []
    if interim_from is None or engine == "ray":
        results.append(run_stage("ingest", params_path, every_process=engine == "ray"))
        if engine != "ray":  # what a later engine's shared ingest reports
            (out / "ingest.json").write_text(json.dumps(results[0]))
    else:
        shutil.copytree(interim_from, out / work / "interim", copy_function=os.link)
        results.append({**json.loads((out / "ingest.json").read_text()), "shared": "hard links to an earlier "
                        "engine's local ingest output (the same files)"})
    results += [run_stage(s, params_path, every_process=engine == "ray") for s in ("validate", "prepare")]
    root = out / work
    manifest = json.loads((root / "prepared" / "manifest.json").read_text())
    phases = {stage: json.loads((root / folder / "engine.json").read_text())
              for stage, folder in (("ingest", "interim"), ("validate", "validated"), ("prepare", "prepared"))
              if (root / folder / "engine.json").is_file()}
    users, items, interactions, n_domains, target_s, cap_mb = SCALES[args.scale]
    total = sum(r["seconds"] for r in results)
    peak = max(r["peak_rss_mb"] for r in results)
    # On Ray the stage's process is only the driver: the workers' memory counts against the cap too.
    peak_all = max(r.get("peak_rss_mb_sum_of_processes", r["peak_rss_mb"]) for r in results)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "scale": args.scale, "data_memory_limit_mb": args.memory_limit_mb, "engine": engine,
        "partitions": args.partitions if engine == "ray" else None,
        "engine_phases_by_stage": phases or None,
        "input": {"interactions": manifest["interactions_in"], "users_kept": manifest["users"],
                  "items_kept": manifest["items"], "interactions_kept": manifest["interactions_kept"],
                  "domains": len(manifest["domains"])},
        "stages": results, "total_seconds": round(total, 1), "peak_rss_mb": peak,
        "peak_rss_mb_all_processes": peak_all,
        "peak_rss_mb_all_processes_at_once": max(r.get("peak_rss_mb_all_processes_at_once", r["peak_rss_mb"])
                                                 for r in results),
        "peak_machine_memory_used_mb": max(r.get("peak_machine_memory_used_mb", r["peak_rss_mb"]) for r in results),
        "targets": {"total_seconds": target_s, "peak_rss_mb": cap_mb},
        "met": {"total_seconds": target_s is None or total < target_s,
                "peak_rss_mb": cap_mb is None or peak_all < cap_mb},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="3m")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/data/<scale>")
    ap.add_argument("--memory-limit-mb", type=int, default=1024, help="data.memory_limit_mb (prepare's DuckDB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", nargs="+", choices=["local", "ray"], default=["local"],
                    help="data.engine of ingest, validate and prepare; several: each in turn on the same input")
    ap.add_argument("--partitions", type=int, default=16, help="data.partitions (Ray)")
    ap.add_argument("--ray-address", default=None, help="data.ray_address (default: a local Ray instance)")
    args = ap.parse_args()
    if len(set(args.engine)) < len(args.engine):  # a second run of an engine would delete the first's interim
        ap.error(f"--engine lists an engine twice: {' '.join(args.engine)}")
    users, items, interactions, n_domains, target_s, cap_mb = SCALES[args.scale]
    domains = DOMAINS[:n_domains]
    out = args.out or Path("bench/data") / args.scale
    raw = out / "raw"
    if not (raw / f"meta_{domains[-1]}.json").exists():
        t0 = time.perf_counter()
        generate(raw, users, items, interactions, domains, args.seed)
        print(f"generated raw files in {time.perf_counter() - t0:.1f} s")
    first = None
    for engine in args.engine:
        work = f"work-{engine}"
        summary = run_engine(out, work, domains, args, engine, first)
        if engine != "ray":  # only a local ingest is shared: Ray's is measured on its own
            first = first or out / work / "interim"
        (out / f"results-{engine}.json").write_text(json.dumps(summary, indent=2))
        suffix = "_ray" if engine == "ray" else ""
        published = REPO / "reports" / "benchmarks" / f"data_{args.scale}{suffix}_cpu.json"
        published.write_text(json.dumps(summary, indent=2))
        print(f"engine {engine}\n{'stage':<10}{'seconds':>10}{'peak RSS MB':>14}")
        for r in summary["stages"]:
            print(f"{r['stage']:<10}{r['seconds']:>10}{r['peak_rss_mb']:>14}")
        print(f"{'total':<10}{summary['total_seconds']:>10.1f}{summary['peak_rss_mb']:>14}   "
              f"(targets: {target_s or '-'} s, < {cap_mb} MB; every process: {summary['peak_rss_mb_all_processes']} MB)")
        print(json.dumps(summary["input"]))


if __name__ == "__main__":
    main()

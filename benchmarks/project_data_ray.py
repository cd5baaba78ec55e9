"""A projection of the data stages on the full Amazon Reviews 2018 dump (about 233M ratings, 15M items) over N Ray
workers, from what `make bench-data-ray` measured (reports/benchmarks/data_<scale>_ray_cpu.json; the local
engine's file is not read).

The model is deliberately plain, and every input is a measured figure:
- each phase's cost is a line through the measured scales (fixed + per event; with one scale, per event only): CPU
  seconds for a phase that runs as Ray tasks or actors (a stage's `engine.json` lists each task's CPU seconds),
  wall seconds for a phase on one process (the driver's merges and indexing, a stage where it is not on Ray);
- a parallel phase's wall time on W workers of C cores is its CPU at the dump's size over W x C, plus the overhead
  measured at the largest scale (its wall time minus its CPU over the benchmark's cores: start-up, scheduling);
  ingest's tasks are its sources (one per file), so its reading takes at least the largest source's share of its CPU
  (by events: Books, ~51M of the dump's ~233M ratings in 29 files), however many cores;
- a partition actor's memory is an idle Ray worker's RSS (measured where one stayed idle, else 0) plus a line
  through the scales' (most events one actor held, that actors' peak RSS over idle); the partition count is the
  smallest multiple of W x C that keeps every actor under the memory per core.
What it leaves out: the shared filesystem's bandwidth and the network between nodes (the benchmark ran on one
machine), stragglers, and Ray's scheduling at thousands of tasks. Where it errs: validate's appends on the driver
overlap its checks but are added to them (an upper bound); costs that grow with items or actors rather than events
(validating the items on the driver, the catalogue, each actor's set-up) scale by events, so only a line through two
scales separates them, and with one scale they are per event.

    python benchmarks/project_data_ray.py --scales 30m 100m --workers 1 4 16 64 --cores-per-worker 16
Writes reports/benchmarks/data_projection_233m.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "reports" / "benchmarks"
DUMP_EVENTS = 233_000_000
DUMP_LARGEST_SOURCE = 51_311_621  # Books.csv, the largest of the dump's 29 rating files: one ingest task reads it


def phases_of(engine: dict) -> list[dict]:
    """A stage's engine.json as a list of phases: {name, wall_seconds, task_cpu_seconds (absent: on the driver),
    task_events (per task, when the tasks are partitions; ingest's tasks stream their sources and hold one chunk),
    per_source (when the tasks are the sources)}."""
    if "phases" in engine:
        return engine["phases"]
    if "source_cpu_seconds" in engine:  # ingest: one task per source, their parts appended by the driver
        return [{"name": "read sources", "wall_seconds": engine["read_seconds"] - engine["merge_seconds"],
                 "task_cpu_seconds": engine["source_cpu_seconds"], "per_source": True},
                {"name": "append parts (driver)", "wall_seconds": engine["merge_seconds"]}]
    if "block_cpu_seconds" in engine:  # validate: actors set up, blocks checked, parts appended by the driver
        return [{"name": "actor set-up", "wall_seconds": engine["setup_seconds"],
                 "task_cpu_seconds": engine["actor_setup_cpu_seconds"]},
                {"name": "check", "wall_seconds": engine["check_seconds"] - engine["merge_seconds"],
                 "task_cpu_seconds": engine["block_cpu_seconds"]},
                {"name": "append parts (driver)", "wall_seconds": engine["merge_seconds"]}]
    phases = [{"name": "split", "wall_seconds": engine["split_seconds"], "task_cpu_seconds": engine["split_cpu_seconds"]},
              {"name": "filter", "wall_seconds": engine["filter_seconds"],
               "task_cpu_seconds": engine["partition_cpu_seconds"], "task_events": engine["partition_events"]},
              {"name": "merge dropped", "wall_seconds": engine.get("dropped_merge_seconds", engine.get("merge_seconds"))}]
    if "settings_cpu_seconds" in engine:  # the partitions index, split and write their users' rows
        # the driver's share (ranking user ids, the catalogue) is in the wall time, so it lands in the overhead
        phases.append({"name": "index and write", "wall_seconds": engine["index_seconds"] + engine["write_seconds"],
                       "task_cpu_seconds": engine["settings_cpu_seconds"]})
        phases.append({"name": "merge tables", "wall_seconds": engine["tables_merge_seconds"]})
    return phases


def measure(ray_result: dict) -> dict:
    """One Ray benchmark's phases: {(stage, phase): {"parallel", "cpu" or "seconds", "overhead"}}, its events,
    cores, and the partition actors' idle and peak RSS with the most events one held."""
    events = ray_result["input"]["interactions"]
    cores = int(ray_result["machine"].split(",")[1].split()[0])
    engines = ray_result.get("engine_phases_by_stage") or {"prepare": ray_result["engine_phases"]}
    phases = {}
    for stage in ray_result["stages"]:
        name = stage["stage"]
        if name not in engines:
            phases[(name, "whole stage (one process)")] = {"parallel": False, "seconds": stage["seconds"]}
            continue
        accounted = 0.0
        for ph in phases_of(engines[name]):
            accounted += ph["wall_seconds"]
            if "task_cpu_seconds" in ph:
                cpu = sum(ph["task_cpu_seconds"])
                phases[(name, ph["name"])] = {"parallel": True, "cpu": cpu,
                                              "overhead": max(0.0, ph["wall_seconds"] - cpu / cores)}
                if ph.get("per_source"):  # as many tasks as sources: the largest one bounds the wall time
                    phases[(name, ph["name"])]["per_source"] = True
            else:
                phases[(name, ph["name"])] = {"parallel": False, "seconds": ph["wall_seconds"]}
        # start-up, reading the validated data's metadata, the manifest: the stage outside its phases, on the driver
        phases[(name, "outside the phases (driver)")] = {"parallel": False,
                                                         "seconds": max(0.0, stage["seconds"] - accounted)}
    roles = {role: p["peak_rss_mb_max"] for s in ray_result["stages"]
             for role, p in (s.get("peak_rss_mb_per_process") or {}).items()}
    # bench_data names a process by its last Ray title: prepare's actor class (PartitionFilter before the
    # partitions indexed and wrote), or IDLE for a worker that never ran anything
    partition = [roles[r] for r in ("ray::Partition", "ray::PartitionFilter") if r in roles]
    held = [max(ph["task_events"]) for e in engines.values() for ph in phases_of(e) if ph.get("task_events")]
    actors = {"idle_mb": roles.get("ray::IDLE", 0), "peak_mb": max(partition), "events": max(held)} \
        if partition and held else None
    return {"events": events, "cores": cores, "load_average_1min": ray_result["load_average_1min"],
            "phases": phases, "actors": actors}


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(fixed, per event) of a line through (events, value) points: the two largest scales, or per event only."""
    points = sorted(points)[-2:]
    if len(points) == 1 or points[0][0] == points[1][0]:
        return 0.0, points[-1][1] / points[-1][0]
    (e1, v1), (e2, v2) = points
    slope = (v2 - v1) / (e2 - e1)
    if slope <= 0:  # noise at two close scales: no growth measured, take the larger scale's rate
        return 0.0, v2 / e2
    return max(0.0, v1 - slope * e1), slope


def project(scales: list[dict], workers: int, cores_per_worker: int, memory_per_core_mb: int,
            events: int = DUMP_EVENTS, largest_source: int = DUMP_LARGEST_SOURCE) -> dict:
    """Wall seconds per phase and in all on `workers` x `cores_per_worker` cores, and the partition count (a phase
    with one task per source takes at least the `largest_source`'s share of its CPU)."""
    slots, largest = workers * cores_per_worker, max(scales, key=lambda m: m["events"])
    partitions, peak = slots, None
    actors = [m["actors"] for m in scales if m["actors"]]
    if actors:  # an actor's RSS: idle + fixed + per_event x the events it holds
        idle = actors[-1]["idle_mb"]
        fixed, per_event = fit([(a["events"], a["peak_mb"] - a["idle_mb"]) for a in actors])
        needed = math.ceil(events * per_event / max(1.0, memory_per_core_mb - idle - fixed))
        partitions = slots * max(1, math.ceil(needed / slots))
        peak = round(idle + fixed + per_event * events / partitions)
    rows, total = [], 0.0
    for key, ph in largest["phases"].items():
        points = [(m["events"], m["phases"][key]["cpu" if ph["parallel"] else "seconds"])
                  for m in scales if key in m["phases"]]
        fixed, per_event = fit(points)
        value = fixed + per_event * events
        seconds = value
        if ph["parallel"]:
            spread = value * largest_source / events if ph.get("per_source") else 0.0
            seconds = max(value / slots, spread) + ph["overhead"]
        rows.append({"stage": key[0], "phase": key[1], "parallel": ph["parallel"], "seconds": round(seconds, 1),
                     "fit": {"fixed": round(fixed, 3), "per_million_events": round(per_event * 1e6, 3),
                             "of": "cpu seconds" if ph["parallel"] else "wall seconds", "scales": len(points)}})
        total += seconds
    return {"workers": workers, "cores": slots, "partitions": partitions, "phases": rows,
            "total_seconds": round(total, 1), "total_hours": round(total / 3600, 2), "partition_actor_peak_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", nargs="+", default=["30m", "100m"], help="benchmarks measured (each phase: a line "
                    "through them)")
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 4, 16, 64])
    ap.add_argument("--cores-per-worker", type=int, default=16)
    ap.add_argument("--memory-per-core-mb", type=int, default=4096)
    ap.add_argument("--events", type=int, default=DUMP_EVENTS)
    ap.add_argument("--largest-source", type=int, default=DUMP_LARGEST_SOURCE,
                    help="events of the largest source file (ingest reads each file in one task)")
    args = ap.parse_args()
    measured = {}
    for scale in args.scales:
        ray_file = REPORTS / f"data_{scale}_ray_cpu.json"
        if not ray_file.is_file():
            raise SystemExit(f"{ray_file} is missing: run `make bench-data-ray SCALE={scale}` first")
        measured[scale] = measure(json.loads(ray_file.read_text()))
    projections = [project(list(measured.values()), w, args.cores_per_worker, args.memory_per_core_mb, args.events,
                           args.largest_source) for w in args.workers]
    basis = max(measured.values(), key=lambda m: m["events"])
    result = {"events": args.events, "scales": args.scales, "cores_per_worker": args.cores_per_worker,
              "memory_per_core_mb": args.memory_per_core_mb,
              "measured": {scale: {**m, "phases": [{"stage": k[0], "phase": k[1], **v} for k, v in m["phases"].items()]}
                           for scale, m in measured.items()},
              "projections": projections, "model": __doc__.split("\n\n")[1]}
    out = REPORTS / "data_projection_233m.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"{args.events / 1e6:.0f}M events, lines through {', '.join(args.scales)}; largest measured on "
          f"({basis['cores']} cores, load {basis['load_average_1min']}):")
    names = [f"{r['stage']}:{r['phase']}" for r in projections[0]["phases"]]
    print(f"{'workers':>8}{'cores':>7}{'parts':>7}" + "".join(f"{n[:22]:>24}" for n in names) + f"{'hours':>8}")
    for p in projections:
        print(f"{p['workers']:>8}{p['cores']:>7}{p['partitions']:>7}"
              + "".join(f"{r['seconds']:>24.0f}" for r in p["phases"]) + f"{p['total_hours']:>8.2f}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()

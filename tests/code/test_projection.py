"""The data-stage projection (benchmarks/project_data_ray.py): lines through measured scales, wall time on N
workers, partitions sized by memory."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "project_data_ray", Path(__file__).resolve().parents[2] / "benchmarks" / "project_data_ray.py")
proj = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(proj)


def _scale(events: int, split_cpu: float, merge_s: float, actor_peak: int, held: int) -> dict:
    return {"events": events, "cores": 2, "load_average_1min": {},
            "phases": {("prepare", "split"): {"parallel": True, "cpu": split_cpu, "overhead": 5.0},
                       ("prepare", "merge"): {"parallel": False, "seconds": merge_s}},
            "actors": {"idle_mb": 200, "peak_mb": actor_peak, "events": held}}


def test_fit_recovers_fixed_cost_and_rate():
    assert proj.fit([(10, 25.0), (30, 65.0)]) == pytest.approx((5.0, 2.0))
    assert proj.fit([(10, 20.0)]) == pytest.approx((0.0, 2.0))  # one scale: per event only
    assert proj.fit([(10, 30.0), (30, 20.0)]) == pytest.approx((0.0, 20.0 / 30))  # no growth measured


def test_parallel_phases_divide_over_cores_and_serial_ones_do_not():
    scales = [_scale(30_000_000, 300.0, 60.0, 1200, 2_000_000), _scale(100_000_000, 1000.0, 200.0, 3000, 6_000_000)]
    one, four = (proj.project(scales, w, 16, 8192, events=200_000_000) for w in (1, 4))
    split = {p["workers"]: next(r for r in p["phases"] if r["phase"] == "split")["seconds"] for p in (one, four)}
    merge = {p["workers"]: next(r for r in p["phases"] if r["phase"] == "merge")["seconds"] for p in (one, four)}
    assert split[1] == pytest.approx(2000.0 / 16 + 5.0, abs=0.1) and split[4] == pytest.approx(2000.0 / 64 + 5.0, abs=0.1)
    assert merge[1] == merge[4] == pytest.approx(400.0)


def test_partitions_keep_each_actor_under_the_memory_per_core():
    scales = [_scale(100_000_000, 1000.0, 200.0, 3000, 6_000_000)]  # 2,800 MB over idle for 6M events
    projected = proj.project(scales, 2, 16, 4096, events=233_000_000)
    assert projected["partitions"] % 32 == 0
    assert projected["partition_actor_peak_mb"] <= 4096
    assert proj.project(scales, 2, 16, 2048, events=233_000_000)["partitions"] > projected["partitions"]


# engine.json as ray_ingest.py, ray_validate.py and ray_filter.py / ray_prepare.py write them, in bench_data's results
VALIDATE_ENGINE = {"engine": "ray", "actors": 2, "blocks": 4, "rows": 1000, "chunk_rows": 250,
                   "actor_setup_cpu_seconds": [3.0, 3.0], "setup_seconds": 4.0, "actor_cpu_seconds": [8.0, 8.0],
                   "check_seconds": 10.0, "merge_seconds": 2.0, "wall_seconds": 14.0,
                   "block_cpu_seconds": [2.5, 2.5, 2.5, 2.5]}
PREPARE_ENGINE = {"engine": "ray", "partitions": 2, "blocks": 2, "events": 1000, "split_seconds": 2.0,
                  "split_cpu_seconds": [1.0, 1.0], "filter_seconds": 6.0, "partition_cpu_seconds": [4.0, 4.0],
                  "partition_events": [600, 400], "dropped_merge_seconds": 1.0, "index_seconds": 2.0,
                  "write_seconds": 3.0, "settings_cpu_seconds": [2.0, 2.0], "tables_merge_seconds": 1.5}


INGEST_ENGINE = {"engine": "ray", "tasks": 2, "sources": ["a", "b"], "rows": 1000, "chunk_rows": 500,
                 "read_seconds": 6.0, "merge_seconds": 1.0, "wall_seconds": 6.0, "source_cpu_seconds": [3.0, 5.0],
                 "source_events": [400, 900], "source_items": [10, 20]}


def _bench_result() -> dict:
    def roles(**peaks):
        return {f"ray::{name}": {"processes": 2, "peak_rss_mb_max": mb} for name, mb in peaks.items()}
    return {"machine": "x86_64, 2 cores, CPython 3.11.7", "load_average_1min": {"before": 1.0, "after": 1.0},
            "input": {"interactions": 1000},
            "engine_phases_by_stage": {"validate": VALIDATE_ENGINE, "prepare": PREPARE_ENGINE},
            "stages": [{"stage": "ingest", "seconds": 5.0, "peak_rss_mb": 100},
                       {"stage": "validate", "seconds": 20.0, "peak_rss_mb": 300,
                        "peak_rss_mb_per_process": roles(BlockValidator=400)},
                       {"stage": "prepare", "seconds": 20.0, "peak_rss_mb": 300,
                        "peak_rss_mb_per_process": roles(Partition=700, _split_block=200, IDLE=90)}]}


def test_measure_reads_both_stages_engine_json_as_bench_data_records_them():
    measured = proj.measure(_bench_result())
    phases = measured["phases"]
    assert phases[("ingest", "whole stage (one process)")] == {"parallel": False, "seconds": 5.0}
    assert phases[("validate", "check")] == {"parallel": True, "cpu": 10.0, "overhead": 8.0 - 10.0 / 2}
    assert phases[("validate", "outside the phases (driver)")]["seconds"] == pytest.approx(20.0 - 14.0)
    assert phases[("prepare", "index and write")] == {"parallel": True, "cpu": 4.0, "overhead": 5.0 - 4.0 / 2}
    assert phases[("prepare", "merge tables")]["seconds"] == 1.5
    assert phases[("prepare", "outside the phases (driver)")]["seconds"] == pytest.approx(20.0 - 15.5)
    # prepare's actors (class Partition), not validate's; idle: a Ray worker that never ran anything
    assert measured["actors"] == {"idle_mb": 90, "peak_mb": 700, "events": 600}


def test_ingest_on_ray_reads_sources_in_parallel_and_the_largest_bounds_it():
    result = _bench_result()
    result["engine_phases_by_stage"]["ingest"] = INGEST_ENGINE
    result["stages"][0]["seconds"] = 8.0  # Ray's start, the report: 2 s outside the phases
    measured = proj.measure(result)
    phases = measured["phases"]
    assert phases[("ingest", "read sources")] == {"parallel": True, "cpu": 8.0, "overhead": 5.0 - 8.0 / 2,
                                                  "per_source": True}
    assert phases[("ingest", "append parts (driver)")] == {"parallel": False, "seconds": 1.0}
    assert phases[("ingest", "outside the phases (driver)")]["seconds"] == pytest.approx(2.0)
    assert measured["actors"]["events"] == 600  # ingest's tasks hold a chunk, not their source: prepare's count
    # 1,000 events cost 8 CPU seconds; at 200,000 events (1,600 s), a source of 5,000 events takes 40 s
    few, many = (proj.project([measured], w, 16, 8192, events=200_000, largest_source=5_000) for w in (1, 64))
    read = {p["workers"]: next(r for r in p["phases"] if r["phase"] == "read sources")["seconds"] for p in (few, many)}
    assert read[1] == pytest.approx(1600.0 / 16 + 1.0, abs=0.1)
    assert read[64] == pytest.approx(40.0 + 1.0, abs=0.1)  # not 1600 / 1024: one task reads that source

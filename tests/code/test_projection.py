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

"""The data-stage benchmark's driver (benchmarks/bench_data.py): each engine's ingest (a local one shareable by hard
links, Ray's always measured), what each records."""
import argparse
import importlib.util
import json
from pathlib import Path

import yaml

_spec = importlib.util.spec_from_file_location(
    "bench_data", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

MANIFEST = {"interactions_in": 100, "users": 5, "items": 7, "interactions_kept": 90, "domains": ["A"]}


def _fake_stages(monkeypatch, calls: list) -> None:
    """run_stage without processes: ingest writes interim/ (and engine.json on Ray), prepare the manifest; Ray's
    stages report workers."""
    def run_stage(stage, params, every_process=False):
        data = yaml.safe_load(params.read_text())["data"]
        engine, root = data["engine"], params.parent / data["root"]
        calls.append((root.name, stage, every_process))
        if stage == "ingest":
            (root / "interim").mkdir(parents=True)
            (root / "interim" / "interactions.parquet").write_text("rows")
            if engine == "ray":
                (root / "interim" / "engine.json").write_text(json.dumps({"source_cpu_seconds": [1.0]}))
        if stage == "prepare":
            (root / "prepared").mkdir(parents=True)
            (root / "prepared" / "manifest.json").write_text(json.dumps(MANIFEST))
        result = {"stage": stage, "seconds": 1.0, "peak_rss_mb": 1000}
        if every_process:
            result |= {"peak_rss_mb_per_process": {}, "peak_rss_mb_sum_of_processes": 5000}
        return result
    monkeypatch.setattr(bench, "run_stage", run_stage)


ARGS = argparse.Namespace(scale="30m", memory_limit_mb=1024, partitions=4, ray_address=None)


def test_a_later_local_engine_reuses_a_local_ingest_by_hard_links(tmp_path, monkeypatch):
    calls = []
    _fake_stages(monkeypatch, calls)
    first = bench.run_engine(tmp_path, "work-local", ["A"], ARGS, "local", None)
    again = bench.run_engine(tmp_path, "work-again", ["A"], ARGS, "local", tmp_path / "work-local" / "interim")
    assert [c for c in calls if c[1] == "ingest"] == [("work-local", "ingest", False)]
    one, two = (tmp_path / w / "interim" / "interactions.parquet" for w in ("work-local", "work-again"))
    assert one.stat().st_ino == two.stat().st_ino
    assert again["stages"][0]["seconds"] == first["stages"][0]["seconds"] and "shared" in again["stages"][0]
    assert first["met"]["peak_rss_mb"] and first["peak_rss_mb_all_processes"] == 1000
    assert first["engine_phases_by_stage"] is None


def test_ray_runs_and_measures_its_own_ingest(tmp_path, monkeypatch):
    calls = []
    _fake_stages(monkeypatch, calls)
    bench.run_engine(tmp_path, "work-local", ["A"], ARGS, "local", None)
    ray = bench.run_engine(tmp_path, "work-ray", ["A"], ARGS, "ray", tmp_path / "work-local" / "interim")
    # Ray's ingest runs (every process sampled) even with a local ingest to share
    assert [c for c in calls if c[1] == "ingest"] == [("work-local", "ingest", False), ("work-ray", "ingest", True)]
    assert "shared" not in ray["stages"][0] and "peak_rss_mb_per_process" in ray["stages"][0]
    assert ray["engine_phases_by_stage"] == {"ingest": {"source_cpu_seconds": [1.0]}}
    # Ray's driver is under the 4 GB cap, its processes together are not
    assert ray["peak_rss_mb"] == 1000 and ray["peak_rss_mb_all_processes"] == 5000
    assert not ray["met"]["peak_rss_mb"]

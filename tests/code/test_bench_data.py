"""The data-stage benchmark's driver (benchmarks/bench_data.py): both engines on one ingest, what each records."""
import argparse
import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bench_data", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

MANIFEST = {"interactions_in": 100, "users": 5, "items": 7, "interactions_kept": 90, "domains": ["A"]}


def _fake_stages(monkeypatch, calls: list) -> None:
    """run_stage without processes: ingest writes interim/, prepare the manifest; Ray's stages report workers."""
    def run_stage(stage, params, every_process=False):
        root = params.parent / f"work-{params.stem.removeprefix('params-')}"
        calls.append((root.name, stage))
        if stage == "ingest":
            (root / "interim").mkdir(parents=True)
            (root / "interim" / "interactions.parquet").write_text("rows")
        if stage == "prepare":
            (root / "prepared").mkdir(parents=True)
            (root / "prepared" / "manifest.json").write_text(json.dumps(MANIFEST))
        result = {"stage": stage, "seconds": 1.0, "peak_rss_mb": 1000}
        if every_process:
            result |= {"peak_rss_mb_per_process": {}, "peak_rss_mb_sum_of_processes": 5000}
        return result
    monkeypatch.setattr(bench, "run_stage", run_stage)


def test_second_engine_reuses_the_first_ingest_by_hard_links(tmp_path, monkeypatch):
    calls = []
    _fake_stages(monkeypatch, calls)
    args = argparse.Namespace(scale="30m", memory_limit_mb=1024, partitions=4, ray_address=None)
    local = bench.run_engine(tmp_path, "work-local", ["A"], args, "local", None)
    ray = bench.run_engine(tmp_path, "work-ray", ["A"], args, "ray", tmp_path / "work-local" / "interim")
    assert [c for c in calls if c[1] == "ingest"] == [("work-local", "ingest")]
    first, second = (tmp_path / w / "interim" / "interactions.parquet" for w in ("work-local", "work-ray"))
    assert first.stat().st_ino == second.stat().st_ino
    assert ray["stages"][0]["seconds"] == local["stages"][0]["seconds"] and "shared" in ray["stages"][0]
    assert local["met"]["peak_rss_mb"] and local["peak_rss_mb_all_processes"] == 1000
    # Ray's driver is under the 4 GB cap, its processes together are not
    assert ray["peak_rss_mb"] == 1000 and ray["peak_rss_mb_all_processes"] == 5000
    assert not ray["met"]["peak_rss_mb"]

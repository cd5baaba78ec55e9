"""ingest on Ray (data.engine: ray) against the single-machine path, on a local two-node Ray cluster: the embedded
sample with bad lines injected in two sources (and a MovieLens source whose items name its domains) gives the same
interim files, quarantine (file, line, reason) and report counts, row for row; a source the reader refuses fails with
its own one-line error; a worker lost mid-stage fails cleanly and leaves no interim data."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from tests.conftest import kill_a_worker_while  # noqa: E402
from llmrec_core.config import load_params  # noqa: E402
from llmrec_core.data.ingest import ingest  # noqa: E402
from llmrec_core.data.layout import DataLayout  # noqa: E402
from llmrec_core.data.sources import InputError  # noqa: E402
from llmrec_core.errors import WorkerLost  # noqa: E402
from tests.data.formats import ml1m  # noqa: E402

BAD_RATINGS = {3: b"B04HBLK57A,u1", 999: b"B04HBLK57A,u\xff\xfe,5.0,1400000500", 1000: b"B04HBLK57A,u2,5.0,yesterday"}
BAD_META = ['{"asin": "B099", "title": "broken', '{"asin": "B098"}']  # malformed JSON; no title (validate's)
SAMPLE_BAD_LINES = [24]  # Books.csv.gz's own unreadable line (its timestamp)
TABLES = ("items", "interactions", "quarantine")


def _write_params(base, doc, name: str, **data):
    import yaml

    d = {**doc, "data": {**doc["data"], "chunk_rows": 1000, "partitions": 2, **data}}
    d["data"]["root"] = str(base / name)
    path = base / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return load_params(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The sample's files, bad rating lines in Books (binary, on a chunk edge) and bad item lines in Movies, plus a
    MovieLens source (domain_from: first_genre). Returns (base folder, params document)."""
    from tests.conftest import sample_params_doc

    base = tmp_path_factory.mktemp("sample-ray-ingest")
    doc = sample_params_doc(base)
    for src in doc["data"]["sources"]:
        for key in ("interactions", "items"):
            src[key] = str(shutil.copy(src[key], base))
    books, movies = doc["data"]["sources"][:2]
    with gzip.open(books["interactions"], "rb") as f:
        lines = f.read().splitlines()
    for k, line in BAD_RATINGS.items():
        lines[k] = line
    with gzip.open(books["interactions"], "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    with gzip.open(movies["items"], "rt") as f:
        meta = f.read().splitlines()
    meta[5:5] = BAD_META
    with gzip.open(movies["items"], "wt") as f:
        f.write("\n".join(meta) + "\n")
    doc["data"]["sources"].append(ml1m(base))
    return base, doc


def _outputs(params) -> dict:
    interim = DataLayout(params.data_root).interim
    report = json.loads((interim / "ingest_report.json").read_text())
    return {**{t: pd.read_parquet(interim / f"{t}.parquet") for t in TABLES},
            "schemas": [pq.read_schema(interim / f"{t}.parquet") for t in TABLES],
            "counts": report["sources"], "run_id": report["run_id"]}


@pytest.fixture(scope="module")
def local(sources):
    params = _write_params(*sources, "local")
    ingest(params)
    return _outputs(params)


def test_ingest_on_ray_writes_the_local_files_row_for_row(ray_cluster, sources, local):
    params = _write_params(*sources, "ray", engine="ray")
    seen = []
    counts = ingest(params, progress=lambda source, n: seen.append((source, n)))
    ray_out = _outputs(params)
    for t in TABLES:
        pd.testing.assert_frame_equal(ray_out[t], local[t], obj=t)
    assert ray_out["schemas"] == local["schemas"]
    assert ray_out["counts"] == local["counts"] and [c.__dict__ for c in counts] == local["counts"]
    assert ray_out["run_id"] != local["run_id"]  # a fresh ingest
    q = local["quarantine"]
    books, movies = sources[1]["data"]["sources"][:2]
    bad = q[q["source_file"] == books["interactions"]].set_index("source_line")["reason"]
    assert sorted(bad.index) == sorted([k + 1 for k in BAD_RATINGS] + SAMPLE_BAD_LINES)
    assert bad[4] == "expected 4 fields, found 2" and bad[1000] == "invalid UTF-8 bytes"
    assert bad[1001] == bad[24] == "timestamp is not a number: 'yesterday'"
    bad_items = q[q["source_file"] == movies["items"]]
    assert bad_items["source_line"].tolist() == [6] and "malformed JSON" in bad_items["reason"].iloc[0]
    assert (local["items"]["domain"] == "Animation").any()  # the MovieLens source's first genres
    assert [s for s, _ in seen] == [s["name"] for s in sources[1]["data"]["sources"]]  # in source order
    interim = DataLayout(params.data_root).interim
    engine = json.loads((interim / "engine.json").read_text())
    assert engine["tasks"] == 5 == len(engine["source_cpu_seconds"]) == len(engine["source_events"])
    assert engine["source_events"][0] == 10696 and sum(engine["source_events"]) == \
        sum(c["interactions"] + c["interactions_quarantined"] for c in local["counts"])
    assert 0 <= engine["merge_seconds"] <= engine["read_seconds"] <= engine["wall_seconds"]
    assert not any(interim.glob("engine-sources*"))


def test_a_source_the_reader_refuses_fails_with_its_own_message(ray_cluster, sources, tmp_path):
    base, doc = sources
    plain = tmp_path / "Books.csv.gz"
    plain.write_text("B04HBLK57A,u1,5.0,1400000000\n")  # named .gz, not gzip-compressed
    bad = {**doc, "data": {**doc["data"], "sources": [{**doc["data"]["sources"][0], "interactions": str(plain)},
                                                       *doc["data"]["sources"][1:]]}}
    params = _write_params(base, bad, "refused", engine="ray")
    with pytest.raises(InputError, match=r"Books.csv.gz: named .gz but not gzip-compressed$"):
        ingest(params)
    assert not DataLayout(params.data_root).interim.exists()
    assert not list(DataLayout(params.data_root).root.glob(".interim.tmp-*"))


def _big_source(d, lines: int) -> dict:
    """An amazon2018 source of `lines` ratings over 100 items: long enough to kill its reader mid-way."""
    d.mkdir()
    (d / "meta.json").write_text("\n".join(json.dumps({"asin": f"I{i}", "title": f"Item {i}"}) for i in range(100)))
    k = np.arange(lines)
    rows = pd.DataFrame({"i": np.char.add("I", (k % 100).astype(str)), "u": np.char.add("u", (k // 7).astype(str)),
                         "r": 5.0, "t": 1_400_000_000 + k})
    rows.to_csv(d / "ratings.csv", header=False, index=False)
    return {"name": "big", "format": "amazon2018", "domain": "Big", "interactions": str(d / "ratings.csv"),
            "items": str(d / "meta.json")}


@pytest.mark.slow
def test_a_lost_worker_fails_ingest_and_leaves_no_interim_data(ray_cluster, sources, tmp_path):
    import psutil

    base, doc = sources
    big = {**doc, "data": {**doc["data"], "sources": [_big_source(tmp_path / "big", 1_000_000)]}}
    params = _write_params(base, big, "lost", engine="ray", chunk_rows=20_000)

    def reader():  # a process: Ray names a task's worker after the task
        readers = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
                   if (p.info["cmdline"] or [""])[0].startswith("ray::_read_into_parts")]
        if not readers:
            return None
        time.sleep(0.5)  # let it write a few chunks
        return readers[0], lambda: os.kill(readers[0], signal.SIGKILL)

    killed, failure = kill_a_worker_while(lambda: ingest(params), reader, WorkerLost)
    if killed is None:
        pytest.skip("the stage finished before its worker could be killed")
    assert failure and "a Ray worker was lost during ingest" in failure[0] and "\n" not in failure[0]
    root = DataLayout(params.data_root).root
    assert not (root / "interim").exists() and not list(root.glob(".interim.tmp-*"))

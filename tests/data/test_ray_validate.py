"""validate on Ray (data.engine: ray) against the single-machine path, on a local two-node Ray cluster: the embedded
sample with bad rows injected on and beside block edges gives the same validated files, quarantines and report,
row for row; the gate still blocks; a worker lost mid-stage fails cleanly and a rerun gives the same."""
from __future__ import annotations

import gzip
import json
import shutil

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from tests.conftest import kill_a_worker_while, named_actor  # noqa: E402
from llmrec_core.config import load_params  # noqa: E402
from llmrec_core.data.ingest import ingest  # noqa: E402
from llmrec_core.data.layout import DataLayout  # noqa: E402
from llmrec_core.data.prepare import PreparationError, prepare  # noqa: E402
from llmrec_core.data.ray_validate import WorkerLost  # noqa: E402
from llmrec_core.data.validate import ValidationFailed, validate  # noqa: E402

BAD_LINES = {10: "NOPE,u1,5.0,1400000999", 4999: "B04HBLK57A,u1,5.0,99", 5000: "NOPE,u2,4.0,1400000999",
             5001: "B04HBLK57A,u3,4.0,4000000000"}  # unknown items and timestamps out of range, on block edges
SAMPLE_BAD_LINES = [12]  # Books.csv.gz's own bad row (an unknown item)
BAD_META = '{"asin": "B04HBLK57A", "title": "A second copy"}\n{"asin": "B0EMPTY", "title": ""}\n'


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    """The sample's files with bad interactions (Books, replaced lines) and bad items appended; ingested. Returns
    a function making params (local engine) for it."""
    import yaml

    from tests.conftest import sample_params_doc

    base = tmp_path_factory.mktemp("sample-ray-validate")
    doc = sample_params_doc(base)
    for src in doc["data"]["sources"]:
        for key in ("interactions", "items"):
            src[key] = str(shutil.copy(src[key], base))
    books = doc["data"]["sources"][0]
    with gzip.open(books["interactions"], "rt") as f:
        lines = f.read().splitlines()
    for k, line in BAD_LINES.items():
        lines[k] = line
    with gzip.open(books["interactions"], "wt") as f:
        f.write("\n".join(lines) + "\n")
    with gzip.open(books["items"], "at") as f:
        f.write(BAD_META)

    def make(name: str, validation: dict | None = None, **data):
        d = {**doc, "data": {**doc["data"], "chunk_rows": 5000, "partitions": 2, **data},
             "validation": {**doc["validation"], "max_timestamp": 1_800_000_000, **(validation or {})}}
        path = base / f"params-{name}.yaml"
        path.write_text(yaml.safe_dump(d))
        return load_params(path)

    ingest(make("ingest"))
    return make


def _outputs(params, run_id: str) -> dict:
    layout = DataLayout(params.data_root)
    results = params.resolve(params.validation.results_dir) / run_id
    chunks = json.loads((results / "interactions.json").read_text())
    return {**{name: pd.read_parquet(layout.validated / f"{name}.parquet")
               for name in ("items", "interactions", "quarantine")},
            "kept quarantine": pd.read_parquet(results / "quarantine.parquet"),
            "report": json.loads((layout.validated / "validation_report.json").read_text())["tables"],
            "chunks": [(c["first_row"], c["rows"], c["result"]["success"], c["result"]["statistics"])
                       for c in chunks["chunks"]],
            "gx": (chunks["success"], chunks["rows"])}


def _assert_same(a: dict, b: dict) -> None:
    for name, frame in a.items():
        if isinstance(frame, pd.DataFrame):
            pd.testing.assert_frame_equal(frame, b[name], obj=name)
        else:
            assert frame == b[name], name


def _on_ray(params):
    return params.model_copy(update={"data": params.data.model_copy(update={"engine": "ray"})})


@pytest.fixture(scope="module")
def local(injected):
    params = injected("local")
    validate(params, run_id="local")
    return _outputs(params, "local")


def test_validate_on_ray_writes_the_local_files_row_for_row(ray_cluster, injected, local):
    params = _on_ray(injected("ray"))
    validate(params, run_id="ray")
    _assert_same(_outputs(params, "ray"), local)
    interactions = local["quarantine"][local["quarantine"]["table"] == "interactions"]
    assert interactions["source_line"].tolist() == sorted([k + 1 for k in BAD_LINES] + SAMPLE_BAD_LINES)
    assert len(local["chunks"]) > 2 and local["report"][1]["quarantined"] >= len(interactions)  # + ingest's
    validated = DataLayout(params.data_root).validated
    engine = json.loads((validated / "engine.json").read_text())
    assert engine["blocks"] == len(local["chunks"]) == len(engine["block_cpu_seconds"])
    assert engine["actors"] == 2 == len(engine["actor_cpu_seconds"])
    assert not any(validated.glob("engine-blocks*"))
    docs = params.resolve(params.validation.results_dir) / "ray" / "data_docs"
    assert (docs / "index.html").is_file()  # the items' Data Docs, rendered on the driver


def test_the_gate_still_blocks_on_ray(ray_cluster, injected, local):
    params = _on_ray(injected("gate", partitions=1, validation={"max_bad_fraction": 0.0001}))
    with pytest.raises(ValidationFailed, match=r"records are bad .* no validated data was written"):
        validate(params, run_id="gate")
    assert not DataLayout(params.data_root).validated.exists()
    results = params.resolve(params.validation.results_dir) / "gate"
    assert json.loads((results / "summary.json").read_text())["tables"] == local["report"]
    bad = len(BAD_LINES) + len(SAMPLE_BAD_LINES)
    kept = pd.read_parquet(results / "quarantine.parquet")  # the two bad items, then the interactions
    assert kept["table"].tolist() == ["items"] * 2 + ["interactions"] * bad
    with pytest.raises(PreparationError, match="no validated data"):
        prepare(params)


@pytest.mark.slow
def test_a_lost_worker_fails_validate_and_a_rerun_gives_the_same(ray_cluster, injected, local):
    params = _on_ray(injected("lost", chunk_rows=1000, partitions=2))
    layout = DataLayout(params.data_root)
    shutil.rmtree(layout.validated, ignore_errors=True)
    killed, failure = kill_a_worker_while(lambda: validate(params, run_id="lost"),
                                          named_actor("llmrec-validate-", "-1", settle=0.5), WorkerLost)
    if killed is None:
        pytest.skip("the stage finished before a worker could be killed")
    assert failure and "a Ray worker was lost during validate" in failure[0] and "\n" not in failure[0]
    assert not layout.validated.exists()
    validate(params, run_id="rerun")
    rerun = _outputs(params, "rerun")
    assert len(rerun.pop("chunks")) > len(local["chunks"])  # blocks of 1000 rows here
    _assert_same(rerun, {k: v for k, v in local.items() if k != "chunks"})

"""prepare on Ray (data.engine: ray) against the single-machine path, on a local two-node Ray cluster: the same
filters, the same prepared files, row for row; a worker lost mid-stage fails cleanly and a rerun gives the same."""
from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from llmrec_core.config import load_params  # noqa: E402
from llmrec_core.data.contract import INTERACTIONS  # noqa: E402
from llmrec_core.data.event_filter import PreparationError, engine, filter_events  # noqa: E402
from llmrec_core.data.ingest import ingest  # noqa: E402
from llmrec_core.data.layout import DataLayout  # noqa: E402
from llmrec_core.data.prepare import prepare  # noqa: E402
from llmrec_core.data.ray_filter import filter_events_ray  # noqa: E402
from llmrec_core.data.validate import validate  # noqa: E402

from .test_event_filter import random_events  # noqa: E402

PREPARED = ["items", "users", "events", "sequences_mixed", "sequences_in_domain", "eval_mixed", "eval_in_domain",
            "dropped"]


def _kept_frame(kept) -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.asarray(kept.user_ids.to_pylist(), dtype=object)[kept.user],
                         "item_id": kept.item_ids[kept.item],
                         "domain": np.asarray(kept.domains, dtype=object)[kept.domain], "timestamp": kept.timestamp})


@pytest.mark.parametrize("seed,overrides", [
    (0, []),
    pytest.param(1, ["prepare.kcore_scope=per_domain", "prepare.min_item_interactions=3"], marks=pytest.mark.slow),
    pytest.param(2, ["data.top_domains=2", "prepare.min_user_interactions=40"], marks=pytest.mark.slow),
    (4, ["prepare.user_sample=5", "prepare.user_sample_seed=7", "prepare.drop_consecutive_repeats=false"]),
])
def test_filters_on_ray_equal_the_local_ones(ray_cluster, tmp_path, seed, overrides):
    inter = random_events(seed)
    path = tmp_path / "interactions.parquet"
    pq.write_table(pa.Table.from_pandas(inter, schema=INTERACTIONS, preserve_index=False), path, row_group_size=700)
    params = load_params("params.yaml", [f"data.root={tmp_path}", "data.domains=[]", "data.partitions=3",
                                         "data.chunk_rows=1000", *overrides])
    with engine(tmp_path / "engine", memory_mb=256, threads=2) as con:
        local = filter_events(con, path, params, tmp_path / "dropped_local.parquet")
    distributed = filter_events_ray(path, params, tmp_path / "dropped_ray.parquet", tmp_path / "scratch")
    pd.testing.assert_frame_equal(_kept_frame(distributed), _kept_frame(local))
    assert distributed.domains == local.domains and distributed.rows_in == local.rows_in
    assert distributed.dropped == local.dropped
    assert pq.read_table(tmp_path / "dropped_ray.parquet").equals(pq.read_table(tmp_path / "dropped_local.parquet"))
    assert not (tmp_path / "scratch").exists()


def _prepared(params) -> dict[str, pd.DataFrame]:
    out = DataLayout(params.data_root).prepared
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in PREPARED}


def _assert_same(a: dict, b: dict) -> None:
    for name in PREPARED:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


@pytest.fixture
def ml100k_validated(ml100k_dir, write_params):
    src = {"name": "ml-100k", "format": "recbole", "domain_from": "first_genre",
           "interactions": str(ml100k_dir / "ml-100k.inter"), "items": str(ml100k_dir / "ml-100k.item")}
    params = write_params([src], data={"top_domains": 5, "partitions": 8})
    ingest(params)
    validate(params)
    return params


@pytest.fixture
def sample_validated(tmp_path_factory):
    """The embedded sample (four Amazon-format files), ingested and validated."""
    import yaml

    from tests.conftest import sample_params_doc

    base = tmp_path_factory.mktemp("sample-ray")
    doc = sample_params_doc(base)
    doc["data"]["partitions"] = 4
    (base / "params.yaml").write_text(yaml.safe_dump(doc))
    params = load_params(base / "params.yaml")
    ingest(params)
    validate(params)
    return params


def test_prepare_on_ray_writes_the_sample_s_files_row_for_row(ray_cluster, sample_validated):
    _prepare_both_ways(sample_validated)


@pytest.mark.slow
def test_prepare_on_ray_writes_ml_100k_s_files_row_for_row(ray_cluster, ml100k_validated):
    _prepare_both_ways(ml100k_validated)


def _prepare_both_ways(params) -> None:
    manifest = prepare(params)
    local = _prepared(params)
    ray_params = params.model_copy(update={"data": params.data.model_copy(update={"engine": "ray"})})
    assert prepare(ray_params) == manifest
    _assert_same(_prepared(ray_params), local)


@pytest.mark.slow
def test_a_lost_worker_fails_the_stage_and_a_rerun_gives_the_same(ray_cluster, ml100k_validated):
    params = ml100k_validated
    prepare(params)
    local = _prepared(params)
    ray_params = params.model_copy(update={"data": params.data.model_copy(update={"engine": "ray", "partitions": 16})})
    layout = DataLayout(params.data_root)
    failure = []

    def run():
        try:
            prepare(ray_params)
        except PreparationError as e:
            failure.append(str(e))

    worker = threading.Thread(target=run)
    worker.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and worker.is_alive() and time.time() < deadline:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith("llmrec-prepare-") and a["name"].endswith("-5")]
        if names:
            try:
                ray.kill(ray.get_actor(names[0]))
                killed = names[0]
            except ValueError:  # gone between the listing and the lookup
                pass
        time.sleep(0.005)
    worker.join()
    if killed is None:
        pytest.skip("the stage finished before a worker could be killed")
    assert failure and "a Ray worker was lost during prepare" in failure[0]
    assert not any(layout.root.glob(".prepare-engine-*"))  # no scratch left behind
    prepare(ray_params)  # the rerun
    _assert_same(_prepared(ray_params), local)

"""prepare on Ray (data.engine: ray) against the single-machine path, on a local two-node Ray cluster: the same
filters and the same prepared files, row for row; the user-partitioned datasets hold the same rows as the single
files; the driver receives no event arrays; a worker lost mid-stage fails cleanly and a rerun gives the same."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from tests.conftest import kill_a_worker_while, named_actor  # noqa: E402
from llmrec_core.config import load_params  # noqa: E402
from llmrec_core.data import event_filter  # noqa: E402
from llmrec_core.data import prepare as prepare_module  # noqa: E402
from llmrec_core.data.contract import INTERACTIONS  # noqa: E402
from llmrec_core.data.event_filter import PreparationError  # noqa: E402
from llmrec_core.data.ingest import ingest  # noqa: E402
from llmrec_core.data.layout import DataLayout  # noqa: E402
from llmrec_core.data.prepare import prepare  # noqa: E402
from llmrec_core.data.prepared_tables import PARTITIONS, USER_TABLES  # noqa: E402
from llmrec_core.data.ray_filter import bounded, user_partition  # noqa: E402
from llmrec_core.data.validate import validate  # noqa: E402

from .test_event_filter import random_events  # noqa: E402

PREPARED = ["items", "users", "events", "sequences_mixed", "sequences_in_domain", "eval_mixed", "eval_in_domain",
            "dropped"]


def _validated_random(root, seed: int) -> pd.DataFrame:
    """random_events as a validated folder under `root` (an item in one domain, as after ingest); returns them."""
    inter = random_events(seed)
    inter["item_id"] = inter["domain"] + ":" + inter["item_id"]
    folder = DataLayout(root).validated
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(inter, schema=INTERACTIONS, preserve_index=False),
                   folder / "interactions.parquet", row_group_size=700)  # several blocks of row groups
    items = inter.drop_duplicates("item_id")[["item_id", "domain"]]
    pq.write_table(pa.Table.from_pandas(items.assign(title="a title of " + items["item_id"]), preserve_index=False),
                   folder / "items.parquet")
    (folder / "validation_report.json").write_text("{}")
    return inter


def _random_params(tmp_path, seed: int, overrides: list[str]):
    inter = _validated_random(tmp_path / "data", seed)
    return inter, load_params("params.yaml", [f"data.root={tmp_path / 'data'}", "data.domains=[]", "data.partitions=3",
                                              "data.chunk_rows=1000", *overrides])


@pytest.mark.parametrize("seed,overrides", [
    (0, []),
    pytest.param(1, ["prepare.kcore_scope=per_domain", "prepare.min_item_interactions=3"], marks=pytest.mark.slow),
    pytest.param(2, ["data.top_domains=2", "prepare.min_user_interactions=40"], marks=pytest.mark.slow),
    (4, ["prepare.user_sample=5", "prepare.user_sample_seed=7", "prepare.drop_consecutive_repeats=false"]),
])
def test_prepare_on_ray_equals_the_local_one_on_random_events(ray_cluster, tmp_path, seed, overrides):
    _, params = _random_params(tmp_path, seed, overrides)
    _prepare_both_ways(params)
    assert not any(DataLayout(params.data_root).root.glob(".prepare-engine-*"))  # no scratch left behind


def _longest(value) -> int:
    """The longest array (rows) in what ray.get returned."""
    if isinstance(value, (list, tuple)):
        return max(map(_longest, value), default=0)
    if isinstance(value, dict):
        return _longest(list(value.values()))
    if isinstance(value, pa.Table):
        return value.num_rows
    if isinstance(value, np.ndarray):
        return value.size
    if isinstance(value, (pa.Array, pa.ChunkedArray, pd.DataFrame, pd.Series)):
        return len(value)
    return 0


def test_the_driver_receives_no_event_arrays(ray_cluster, tmp_path, monkeypatch):
    inter, params = _random_params(tmp_path, 0, ["data.engine=ray"])
    received, get = [], ray.get

    def spy(refs, *args, **kwargs):
        got = get(refs, *args, **kwargs)
        received.append(_longest(got))
        return got

    def refuse(*args, **kwargs):
        raise AssertionError("the driver gathered the kept events")

    monkeypatch.setattr(ray, "get", spy)
    monkeypatch.setattr(event_filter.KeptEvents, "__init__", refuse)  # nor read from the partitions' files
    monkeypatch.setattr(prepare_module, "index_events", refuse)
    manifest = prepare(params)
    # only per-user and per-item arrays: the selected domains' items and users, far fewer than the events kept
    bound = max(inter["item_id"].nunique(), inter["user_id"].nunique())
    assert bound * 5 < manifest["interactions_kept"]
    assert received and max(received) <= bound


class _Phase:
    """An actor whose phase takes a while and says when it ran."""

    def run(self, k: int) -> tuple[int, float, float]:
        import time

        start = time.monotonic()
        time.sleep(0.3)
        return k, start, time.monotonic()


def test_heavy_phases_run_on_at_most_as_many_partitions_at_once_as_the_cluster_has_cpus(ray_cluster):
    actors = [ray.remote(_Phase).remote() for _ in range(5)]
    ray.get([a.__ray_ready__.remote() for a in actors])  # started: their start-up is not the phase
    spans = ray.get(bounded([lambda a=a, k=k: a.run.remote(k) for k, a in enumerate(actors)]))
    assert [k for k, _, _ in spans] == list(range(5))  # each call's result in its place
    most = max(sum(s <= t < e for _, s, e in spans) for _, t, _ in spans)
    assert most == 2  # the two-node cluster's CPUs: never more, and not one at a time either
    spans = ray.get(bounded([lambda a=a, k=k: a.run.remote(k) for k, a in enumerate(actors)], width=1))
    assert all(e1 <= s2 for (_, _, e1), (_, s2, _) in zip(spans, spans[1:]))
    for a in actors:
        ray.kill(a)


def test_an_event_of_an_unknown_item_fails_as_on_one_machine(ray_cluster, tmp_path):
    inter, params = _random_params(tmp_path, 0, [])
    items = DataLayout(params.data_root).validated / "items.parquet"
    table = pq.read_table(items)
    busiest = inter["item_id"].value_counts().index[0]
    pq.write_table(table.filter(pc.not_equal(table.column("item_id"), busiest)), items)
    errors = []
    for name in ("local", "ray"):
        with pytest.raises(PreparationError, match="events name an item missing from the validated items") as e:
            prepare(params.model_copy(update={"data": params.data.model_copy(update={"engine": name})}))
        errors.append(str(e.value))
    assert errors[0] == errors[1]


def _prepared(params) -> dict[str, pa.Table]:
    out = DataLayout(params.data_root).prepared
    return {name: pq.read_table(out / f"{name}.parquet") for name in PREPARED if (out / f"{name}.parquet").exists()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].schema == b[name].schema, name
        pd.testing.assert_frame_equal(a[name].to_pandas(), b[name].to_pandas(), obj=name)


def _assert_parts_hold_the_rows(params) -> None:
    """Each user table's partitioned dataset, concatenated and sorted (by user, eval rows valid first), is its
    single file row for row; a part holds the users of its partition."""
    out = DataLayout(params.data_root).prepared
    user_ids = pq.read_table(out / "users.parquet").column("user_id").to_numpy()
    for name in USER_TABLES:
        parts = sorted((out / PARTITIONS / name).glob("part-*.parquet"))
        whole = pq.read_table(out / f"{name}.parquet")
        assert len(parts) > 1 and all(pq.read_schema(p) == whole.schema for p in parts), name
        for path in parts:
            users = pq.read_table(path, columns=["user_idx"]).column(0).to_numpy()
            assert (user_partition(user_ids[users], params.data.partitions) == int(path.stem[5:])).all(), path
        rows = pa.concat_tables(pq.read_table(p) for p in parts).to_pandas()
        test = (rows["split"] == "test").to_numpy() if name.startswith("eval") else np.zeros(len(rows), bool)
        key = test * len(user_ids) + rows["user_idx"].to_numpy()
        rows = rows.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, whole.to_pandas(), obj=name)


@pytest.fixture
def ml100k_validated(ml100k_dir, write_params):
    src = {"name": "ml-100k", "format": "recbole", "domain_from": "first_genre",
           "interactions": str(ml100k_dir / "ml-100k.inter"), "items": str(ml100k_dir / "ml-100k.item")}
    params = write_params([src], data={"top_domains": 5, "partitions": 8})
    ingest(params)
    validate(params)
    return params


@pytest.fixture(scope="module")
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


@pytest.mark.parametrize("overrides", [[], ["prepare.time_split.new_item_share=0.1",
                                               "prepare.time_split.window_days=1000"]])
def test_prepare_on_ray_writes_the_sample_s_files_row_for_row(ray_cluster, sample_validated, overrides):
    _prepare_both_ways(load_params(sample_validated.base_dir / "params.yaml", overrides))


@pytest.mark.slow
def test_prepare_on_ray_writes_ml_100k_s_files_row_for_row(ray_cluster, ml100k_validated):
    _prepare_both_ways(ml100k_validated)


def _prepare_both_ways(params) -> None:
    manifest = prepare(params)
    out = DataLayout(params.data_root).prepared
    local, local_manifest = _prepared(params), (out / "manifest.json").read_text()
    assert not (out / PARTITIONS).exists()
    ray_params = params.model_copy(update={"data": params.data.model_copy(update={"engine": "ray"})})
    assert prepare(ray_params) == manifest
    assert (out / "manifest.json").read_text() == local_manifest  # the same keys in the same order too
    assert json.loads((out / "engine.json").read_text())["partitions"] == params.data.partitions
    if params.prepare.time_split is None:
        _assert_parts_hold_the_rows(ray_params)
    else:  # the time split rewrites the single files; partitioned leave-one-out files would disagree
        assert not (out / PARTITIONS).exists()
    _assert_same(_prepared(ray_params), local)


@pytest.mark.slow
def test_a_lost_worker_fails_the_stage_and_a_rerun_gives_the_same(ray_cluster, ml100k_validated):
    params = ml100k_validated
    prepare(params)
    local = _prepared(params)
    ray_params = params.model_copy(update={"data": params.data.model_copy(update={"engine": "ray", "partitions": 16})})
    layout = DataLayout(params.data_root)
    killed, failure = kill_a_worker_while(lambda: prepare(ray_params), named_actor("llmrec-prepare-", "-5"),
                                          PreparationError)
    if killed is None:
        pytest.skip("the stage finished before a worker could be killed")
    assert failure and "a Ray worker was lost during prepare" in failure[0]
    assert not any(layout.root.glob(".prepare-engine-*"))  # no scratch left behind
    prepare(ray_params)  # the rerun
    _assert_same(_prepared(ray_params), local)

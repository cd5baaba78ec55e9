"""The Ray stages turn a lost worker (Ray's memory monitor killing a task included) into their one-line error and
leave no scratch behind; no cluster needed (Ray's connection is stubbed)."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from llmrec_core.data import ray_filter, ray_ingest, ray_validate  # noqa: E402
from llmrec_core.data.event_filter import PreparationError  # noqa: E402
from llmrec_core.data.layout import DataLayout  # noqa: E402
from llmrec_core.data.validate import Tally  # noqa: E402

LOST = [ray.exceptions.OutOfMemoryError("a task was killed by the memory monitor"),
        ray.exceptions.WorkerCrashedError(), ray.exceptions.NodeDiedError("the node died")]


@pytest.mark.parametrize("error", LOST, ids=lambda e: type(e).__name__)
def test_prepare_fails_with_its_error_and_removes_its_scratch(tmp_path, monkeypatch, error):
    def lose(*_):
        raise error
    monkeypatch.setattr(ray_filter, "connect", lambda params: False)
    monkeypatch.setattr(ray_filter, "_filter", lose)
    scratch = tmp_path / "scratch"
    with pytest.raises(PreparationError, match=f"lost during prepare \\({type(error).__name__}\\)"):
        with ray_filter.filtered_partitions(tmp_path / "v.parquet", None, tmp_path / "d.parquet", scratch, object):
            pass
    assert not scratch.exists()


@pytest.mark.parametrize("error", LOST, ids=lambda e: type(e).__name__)
def test_validate_fails_with_its_error_and_removes_its_scratch(tmp_path, monkeypatch, error):
    def lose(*_):
        raise error
    monkeypatch.setattr(ray_validate, "connect", lambda params: False)
    monkeypatch.setattr(ray_validate, "_check", lose)
    with pytest.raises(ray_validate.WorkerLost, match=f"lost during validate \\({type(error).__name__}\\)"):
        ray_validate.check_interactions_ray(DataLayout(tmp_path), tmp_path, tmp_path, [], pd.Index([]), None,
                                            lambda bad: bad, Tally())
    assert not (tmp_path / "engine-blocks").exists()


@pytest.mark.parametrize("error", LOST, ids=lambda e: type(e).__name__)
def test_ingest_fails_with_its_error_and_removes_its_scratch(tmp_path, monkeypatch, error):
    def lose(*_):
        raise error
    monkeypatch.setattr(ray_ingest, "connect", lambda params: False)
    monkeypatch.setattr(ray_ingest, "_ingest", lose)
    params = SimpleNamespace(data=SimpleNamespace(chunk_rows=1000))
    with pytest.raises(ray_ingest.WorkerLost, match=f"lost during ingest \\({type(error).__name__}\\)"):
        ray_ingest.ingest_ray(tmp_path, [], params)
    assert not (tmp_path / "engine-sources").exists()

"""`llmrec index` with `index.encode_engine: ray`: the catalogue's shards encoded on Ray actors of a local two-node
cluster give the single-process index's vectors; an actor lost mid-encoding costs only its shard."""
from __future__ import annotations


import faiss
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from tests.conftest import kill_a_worker_while, named_actor  # noqa: E402
from llmrec_core.serve.index import ItemIndex  # noqa: E402
from llmrec_core.serve.recommend import build_index, index_dir  # noqa: E402


def _vectors(index: ItemIndex) -> np.ndarray:
    return faiss.downcast_index(index.index.index).reconstruct_n(0, index.index.ntotal)


def test_shards_encoded_on_ray_actors_give_the_single_process_index(ray_cluster, tiny_bert, sample_prepared):
    local = build_index(sample_prepared("encode-local", model={"name_or_path": str(tiny_bert)},
                                        index={"encode_shard_items": 500}), zero_shot=True)
    params = sample_prepared("encode-ray", model={"name_or_path": str(tiny_bert)},
                             index={"encode_shard_items": 500, "encode_engine": "ray", "encode_actors": 2})
    distributed = build_index(params, zero_shot=True)
    assert distributed.meta["encode_engine"] == "ray" and distributed.meta["encode_processes"] == 2
    np.testing.assert_array_equal(_vectors(distributed), _vectors(local))  # the same shards, batches and code
    assert not index_dir(params).with_name("index.encoding").exists()


@pytest.mark.slow
def test_a_lost_encoder_actor_costs_only_its_shard(ray_cluster, tiny_bert, sample_prepared):
    local = build_index(sample_prepared("encode-local2", model={"name_or_path": str(tiny_bert)},
                                        index={"encode_shard_items": 200}), zero_shot=True)
    params = sample_prepared("encode-ray-loss", model={"name_or_path": str(tiny_bert)},
                             index={"encode_shard_items": 200, "encode_engine": "ray", "encode_actors": 2})
    logged, result = [], []
    actor = named_actor("llmrec-encode-")

    def encoder_at_work():  # once the first shard is written
        return actor() if any(index_dir(params).with_name("index.encoding").glob("shard-*.npy")) else None

    killed, _ = kill_a_worker_while(lambda: result.append(build_index(params, zero_shot=True, log=logged.append)),
                                    encoder_at_work, timeout=180)
    if killed is None:
        pytest.skip("the encoding finished before an actor could be killed")
    assert any("an encoder actor was lost" in m for m in logged)
    np.testing.assert_array_equal(_vectors(result[0]), _vectors(local))

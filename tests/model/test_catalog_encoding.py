"""Encoding the catalogue for the index: length-sorted batches give the vectors of plain encoding, an
interrupted encoding resumes from its shards, and `accelerate launch` splits the shards across processes."""
import os
import subprocess
import sys

import faiss
import numpy as np
import pandas as pd
import yaml

import llmrec_core.serve.catalog_encoding as catalog_encoding
from llmrec_core.model.inference import encode_items
from llmrec_core.serve.catalog_encoding import catalog_key, encode_catalog
from llmrec_core.serve.index import ItemIndex
from llmrec_core.serve.recommend import build_index, index_dir
from llmrec_core.evaluate.trained import lm_encoder


def _vectors(index: ItemIndex) -> np.ndarray:
    return faiss.downcast_index(index.index.index).reconstruct_n(0, index.index.ntotal)


def test_length_sorted_shards_equal_plain_encoding_and_resume(tiny_bert, sample_prepared, tmp_path, monkeypatch):
    params = sample_prepared("encode", model={"name_or_path": str(tiny_bert)})
    items = pd.read_parquet(params.data_root / "prepared" / "items.parquet")
    bundle = lm_encoder(params, items, tuned=False)
    lengths = [len(t) for t in bundle.tokens.item_ids]
    assert len(set(lengths)) > 5  # titles of many lengths: sorting reorders the batches
    plain = encode_items(bundle, len(items), 16).numpy()
    work, key, shard = tmp_path / "encoding", catalog_key(items, "weights-a"), 100
    got = encode_catalog(bundle, len(items), 16, work, key, shard)
    np.testing.assert_allclose(got, plain, atol=1e-5)
    shards = sorted(work.glob("shard-*.npy"))
    assert len(shards) == -(-len(items) // shard) > 2

    encoded = []
    real = catalog_encoding.encode_items
    monkeypatch.setattr(catalog_encoding, "encode_items",
                        lambda b, rows, size, by_length: encoded.append(int(rows[0])) or real(b, rows, size, by_length))
    shards[1].unlink()  # killed while encoding shard 1
    np.testing.assert_allclose(encode_catalog(bundle, len(items), 16, work, key, shard), got, atol=1e-6)
    assert encoded == [shard]  # only the missing shard was encoded again
    encoded.clear()
    encode_catalog(bundle, len(items), 16, work, catalog_key(items, "weights-b"), shard)
    assert len(encoded) == len(shards)  # other weights: nothing on disk is reused


def test_two_processes_encode_the_catalogue_for_one_index(tiny_bert, sample_prepared):
    params = sample_prepared("encode-ddp", model={"name_or_path": str(tiny_bert)})
    doc = yaml.safe_load((params.base_dir / "params-encode-ddp.yaml").read_text())
    doc["index"] = {"encode_shard_items": 100}
    path = params.base_dir / "params-encode-ddp-shards.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "llmrec_core", "index", "--zero-shot",
           "--params", str(path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = -(-len(pd.read_parquet(params.data_root / "prepared" / "items.parquet")) // 100)
    for rank in (0, 1):  # shards r, r+2, ...
        assert f"process {rank} of 2: encoded {len(range(rank, shards, 2))} shard(s)" in done.stdout
    index = ItemIndex.load(index_dir(params))
    assert index.meta["encode_processes"] == 2
    assert not index_dir(params).with_name("index.encoding").exists()  # shards are dropped once indexed
    single = build_index(params, zero_shot=True)
    assert single.meta["encode_processes"] == 1
    np.testing.assert_allclose(_vectors(index), _vectors(single), atol=1e-5)

"""The new-item setting end to end on the sample: new items are never trained on, and the ingest-new-items
path puts into the index exactly the text-only vectors that the evaluation ranks them with."""
import json

import numpy as np
import pandas as pd
import yaml
from safetensors.torch import load_file

from llmrec_core.config import load_params
from llmrec_core.data.ingest import ingest
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.prepare import prepare
from llmrec_core.data.settings import load_setting
from llmrec_core.data.validate import validate
from llmrec_core.model.inference import encode_items
from llmrec_core.serve.index import ItemIndex
from llmrec_core.serve.new_items import ingest_new_items
from llmrec_core.serve.recommend import build_index, index_dir, load_index
from llmrec_core.evaluate.trained import lm_encoder
from llmrec_core.train.loop import train


def test_new_items_reach_the_index_as_text_without_retraining(sample_prepared, tiny_bert, tmp_path):
    doc = yaml.safe_load((sample_prepared("new-item-path").base_dir / "params.yaml").read_text())
    doc["data"]["root"] = str(tmp_path / "data")
    doc["prepare"] = {**doc.get("prepare", {}), "time_split": {"new_item_share": 0.2, "window_days": 60}}
    doc["model"] = {**doc["model"], "name_or_path": str(tiny_bert)}
    doc["train"] = {**doc["train"], "max_steps": 2, "batch_size": 8, "run_dir": str(tmp_path / "run")}
    doc["index"] = {**doc["index"], "model": "llmrec"}  # the LM's path for new items (params.yaml serves the head)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    params = load_params(tmp_path / "params.yaml")
    ingest(params)
    validate(params)
    prepare(params)
    prepared = DataLayout(params.data_root).prepared
    items = pd.read_parquet(prepared / "items.parquet")
    new = items[items["group"] == "new"]
    assert len(new) > 0 and not set(new["item_idx"]) & set(load_setting(prepared, "mixed").seq_values.tolist())

    train(params, show_progress=False)
    weights = load_file(str(tmp_path / "run" / "weights.safetensors"))
    # the index of the model trained before the cutoff, without the new items ...
    full = build_index(params)
    known = np.flatnonzero(~full.catalog["item_id"].isin(new["item_id"]).to_numpy())
    vectors = np.stack([full.index.reconstruct(int(i)) for i in known])
    ItemIndex.build(vectors, full.catalog.iloc[known], full.meta).save(index_dir(params))
    # ... receives them as a new-items file: text only
    native = new["item_id"].str.split(":", n=1).str[1]
    feed = tmp_path / "new.jsonl"
    feed.write_text("".join(json.dumps({"item_id": i, "domain": d, "title": t}) + "\n"
                            for i, d, t in zip(native, new["domain"], new["title"])))
    result = ingest_new_items(params, feed)
    assert len(result.accepted) == len(new) and not len(result.quarantined)
    index = load_index(params)
    added = index.catalog.index[index.catalog["item_id"].isin(new["item_id"])].to_numpy()
    assert len(added) == len(new)
    got = np.stack([index.index.reconstruct(int(i)) for i in added])
    order = pd.Index(new["item_id"]).get_indexer(index.catalog["item_id"].iloc[added])
    evaluated = encode_items(lm_encoder(params, items, tuned=True), len(items), 64).numpy()[new["item_idx"]]
    np.testing.assert_allclose(got, evaluated[order], atol=1e-5)  # the vectors evaluation ranked them with
    after = load_file(str(tmp_path / "run" / "weights.safetensors"))
    assert all(np.array_equal(weights[k].numpy(), after[k].numpy()) for k in weights)  # no retraining

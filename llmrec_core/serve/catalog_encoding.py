"""Encoding a whole catalogue for the index, at any size.

- Titles go through the encoder in length order: a batch pads to its longest title, so sorted batches pad
  little (and the vectors come back in catalogue order).
- The catalogue is cut into shards of `index.encode_shard_items` items, each written to disk as it finishes;
  an interrupted `llmrec index` resumes from the shards on disk (those of the same weights and items).
- Under `accelerate launch --num_processes P -m llmrec_core index ...`, process r encodes shards r, r+P, ...
  on its own device (the engine training uses); the main process then builds the index from all shards.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..model.inference import encode_items


def catalog_key(items: pd.DataFrame, model_key: str) -> str:
    """What the shards were encoded from: the items (ids, domains, titles) and the encoder (`model_key`)."""
    digest = hashlib.sha256(model_key.encode())
    digest.update(pd.util.hash_pandas_object(items[["item_id", "domain", "title"]], index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def process_state():
    """accelerate's view of this process (rank, world size, device); cpu=True without CUDA lets the processes
    of `accelerate launch --multi_gpu` form a gloo group, as in training."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _shard_path(work: Path, shard: int) -> Path:
    return work / f"shard-{shard:05d}.npy"


def encode_catalog(bundle, n_items: int, batch_size: int, work: Path, key: str, shard_items: int,
                   log=print) -> np.ndarray | None:
    """Vectors of items 0..n_items-1 of `bundle`, encoded shard by shard into `work` (kept when `key`, see
    catalog_key, matches, so a rerun resumes), split across the processes of `accelerate launch`. The main
    process gets the vectors; the others get None once every shard is on disk."""
    state = process_state()
    bundle.encoder.to(state.device)
    shards = -(-n_items // shard_items)
    meta = {"key": key, "items": n_items, "shard_items": shard_items}
    if state.is_main_process:
        stored = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else None
        if stored != meta:  # other weights, items or shard size: nothing on disk can be reused
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            (work / "meta.json").write_text(json.dumps(meta))
    state.wait_for_everyone()
    mine = [s for s in range(state.process_index, shards, state.num_processes)]
    todo = [s for s in mine if not _shard_path(work, s).is_file()]
    if len(todo) < len(mine):
        log(f"process {state.process_index}: resuming, {len(mine) - len(todo)} of {len(mine)} shards on disk")
    for shard in todo:
        rows = np.arange(shard * shard_items, min(n_items, (shard + 1) * shard_items))
        vectors = encode_items(bundle, rows, batch_size, by_length=True).float().numpy()
        tmp = work / f".shard-{shard:05d}.{os.getpid()}.npy"
        np.save(tmp, vectors)
        os.replace(tmp, _shard_path(work, shard))  # a shard on disk is always complete
    if state.num_processes > 1:
        log(f"process {state.process_index} of {state.num_processes}: encoded {len(todo)} shard(s)")
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return np.concatenate([np.load(_shard_path(work, s)) for s in range(shards)]) if shards else np.zeros((0, 0))

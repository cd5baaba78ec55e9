"""Encoding the catalogue on a Ray cluster (`index.encode_engine: ray`): the shards of catalog_encoding.py, mapped
over encoder actors.

Each actor loads the LM once (the run's weights, from storage every node sees) on its device (a GPU with
`index.encode_gpus_per_actor`, else its CPU) and encodes whole shards, length-sorted as on one machine, writing each
atomically into the shared shard folder. The driver hands out the shards that are not on disk yet; when an actor
dies, its shard goes to a fresh actor, so a lost worker costs only the shard it was encoding. The vectors equal
the single-process path's: the same shards, batches and code.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Params
from .catalog_encoding import _shard_path


class ShardEncoder:
    """One actor: the LM of `params` (tuned or not) over `items`, encoding shards into `work`."""

    def __init__(self, params: Params, items_path: str, tuned: bool):
        import torch

        from ..evaluate.trained import lm_encoder

        self.bundle = lm_encoder(params, pd.read_parquet(items_path), tuned=tuned)
        self.bundle.encoder.to("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = params.eval.batch_size

    def encode(self, shard: int, start: int, end: int, work: str) -> int:
        from ..model.inference import encode_items

        vectors = encode_items(self.bundle, np.arange(start, end), self.batch_size, by_length=True).float().numpy()
        tmp = Path(work) / f".shard-{shard:05d}.{os.getpid()}.npy"
        np.save(tmp, vectors)
        os.replace(tmp, _shard_path(Path(work), shard))  # a shard on disk is always complete
        return shard


def encode_catalog_ray(params: Params, items_path: Path, tuned: bool, n_items: int, work: Path, key: str,
                       log=print) -> np.ndarray:
    """Vectors of items 0..n_items-1 encoded on Ray actors into `work` (kept when `key` matches: a rerun resumes)."""
    from ..data.ray_filter import connect

    started = connect(params)
    import ray

    try:
        shard_items = params.index.encode_shard_items
        shards = -(-n_items // shard_items)
        meta = {"key": key, "items": n_items, "shard_items": shard_items}
        stored = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else None
        if stored != meta:  # other weights, items or shard size: nothing on disk can be reused
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            (work / "meta.json").write_text(json.dumps(meta))
        todo = [s for s in range(shards) if not _shard_path(work, s).is_file()]
        if len(todo) < shards:
            log(f"resuming: {shards - len(todo)} of {shards} shards on disk")
        if todo:
            _encode_on_actors(params, items_path, tuned, work, todo, shard_items, n_items, log)
        return np.concatenate([np.load(_shard_path(work, s)) for s in range(shards)]) if shards else np.zeros((0, 0))
    finally:
        if started:
            ray.shutdown()


def _encode_on_actors(params: Params, items_path: Path, tuned: bool, work: Path, todo: list[int], shard_items: int,
                      n_items: int, log) -> None:
    import ray

    cfg = params.index
    actor_class = ray.remote(num_gpus=cfg.encode_gpus_per_actor, num_cpus=1)(ShardEncoder)
    made = iter(range(1 << 30))

    def spawn():
        return actor_class.options(name=f"llmrec-encode-{os.getpid()}-{next(made)}").remote(params, str(items_path),
                                                                                          tuned)

    actors = [spawn() for _ in range(min(cfg.encode_actors, len(todo)))]
    queue, running, lost = list(todo), {}, 0
    try:
        for actor in actors:
            _submit(actor, queue, running, shard_items, n_items, work)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            actor, shard = running.pop(ref)
            try:
                ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                lost += 1
                if lost > 3 * len(todo):
                    raise RuntimeError(f"encoder actors keep dying ({type(e).__name__}); giving up") from None
                log(f"an encoder actor was lost on shard {shard} ({type(e).__name__}); encoding it on a new one")
                queue.insert(0, shard)
                actors.remove(actor)
                actor = spawn()
                actors.append(actor)
            _submit(actor, queue, running, shard_items, n_items, work)
    finally:
        for actor in actors:
            ray.kill(actor)


def _submit(actor, queue: list[int], running: dict, shard_items: int, n_items: int, work: Path) -> None:
    if queue:
        shard = queue.pop(0)
        start, end = shard * shard_items, min(n_items, (shard + 1) * shard_items)
        running[actor.encode.remote(shard, start, end, str(work))] = (actor, shard)

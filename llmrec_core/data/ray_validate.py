"""The interactions' validation on a Ray cluster (`data.engine: ray`): the GX suite and rules of validate.py's chunk
loop, the same files.

1. The driver cuts interim/interactions.parquet into blocks of `data.chunk_rows` rows: the local path's chunks, so
   interactions.json lists the same chunks (first row, rows, GX result). Each block names the row groups it spans.
2. A pool of validator actors (`data.partitions` of them, at most one per block and one per CPU of the cluster: the
   checks are CPU-bound, and each actor costs its process, GX's import and memory) each set up one GX context and
   suite, and one index of the validated items' ids (put in the object store once), when they start; then each
   block goes to a free actor, which reads its rows, runs the suite and writes the block's good rows and its
   quarantined rows (file, line, reason, record) as two part files under a scratch folder in the stage's
   temporary folder (each written under a temporary name, then renamed: whole or absent). It returns the GX
   result, the counts and reasons, and its CPU seconds.
3. The driver appends the part files, in block order and one row group at a time (memory: one block), to
   validated/interactions.parquet and to the quarantine files (validated/ and the copy beside the GX results),
   after the items' rows validate.py wrote: the local path's files, row for row.

Data Docs: the items are validated on the driver as on the local path, so their page is rendered; the workers'
GX contexts are ephemeral and render none, so the interactions have no Data Docs page on Ray: their GX results are
all in interactions.json (as on the local path). The driver then writes validated/engine.json (what a projection to
more workers starts from): the wall seconds of the actors' start (`setup_seconds`), of the checks and the appends
that overlap them (`check_seconds`, of which `merge_seconds` the driver's appends) and in all; each block's CPU
seconds; each actor's CPU seconds at the end of its setup (its process's start and imports included: GX's import
alone costs seconds) and in all.

Every node must see `<data.root>` (a shared filesystem). A worker lost mid-stage fails the stage with a one-line
error and nothing is written (the stage's outputs are swapped in only on success); a rerun writes the same files.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Params
from ..errors import WorkerLost
from .contract import INTERACTIONS, QUARANTINE, with_known_item
from .gx_suite import Suite, split_bad, write_chunk_results
from .layout import DataLayout
from .parquet_io import ParquetSink, append_file
from .ray_filter import connect, lost_worker_errors


def blocks(path: Path, rows: int) -> list[tuple[list[int], int, int, int]]:
    """(row groups, first row, rows, rows to skip in the first group) of each block: rows [k * rows, (k+1) * rows)
    of the file, the chunks parquet_io.read_chunks yields."""
    meta = pq.ParquetFile(path).metadata
    ends = np.cumsum([meta.row_group(g).num_rows for g in range(meta.num_row_groups)], dtype=np.int64)
    starts = ends - np.diff(ends, prepend=0)
    out = []
    for first in range(0, meta.num_rows, rows):
        last = min(first + rows, meta.num_rows)
        groups = np.flatnonzero((starts < last) & (ends > first))
        out.append((groups.tolist(), first, last - first, first - int(starts[groups[0]])))
    return out


def check_interactions_ray(layout: DataLayout, out: Path, results_dir: Path, expectations, known: pd.Index,
                           params: Params, quarantine, tally) -> None:
    """validate._check_interactions on Ray: good rows to out/interactions.parquet, bad ones to `quarantine`, counts
    to `tally` (a validate.Tally), the GX results to interactions.json, the engine's timings to out/engine.json."""
    started = connect(params)
    import ray

    scratch = out / "engine-blocks"
    scratch.mkdir()
    try:
        _check(layout.interim / "interactions.parquet", out, results_dir, expectations, known, params, quarantine,
               tally, scratch)
    except lost_worker_errors() as e:
        raise WorkerLost(f"a Ray worker was lost during validate ({type(e).__name__}); nothing was written: "
                         "run `llmrec validate` again") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if started:
            ray.shutdown()


def _check(path: Path, out: Path, results_dir: Path, expectations, known: pd.Index, params: Params, quarantine,
           tally, scratch: Path) -> None:
    import ray

    clock = time.perf_counter()
    todo = blocks(path, params.data.chunk_rows)
    ids = ray.put(pa.array(known.to_numpy(dtype=object), pa.string()))  # once, for every actor
    size = min(params.data.partitions, len(todo), max(1, int(ray.cluster_resources().get("CPU", 1))))
    actor = ray.remote(BlockValidator)
    actors = [actor.options(name=f"llmrec-validate-{os.getpid()}-{k}").remote(str(path), str(scratch), expectations,
                                                                               ids)
              for k in range(size)]
    timings = {"engine": "ray", "actors": size, "blocks": len(todo), "rows": sum(b[2] for b in todo),
               "chunk_rows": params.data.chunk_rows}
    chunks, merge, block_cpu = [], 0.0, [0.0] * len(todo)
    try:
        timings["actor_setup_cpu_seconds"] = [round(t, 3) for t in ray.get([a.cpu_seconds.remote() for a in actors])]
        timings["setup_seconds"] = round(time.perf_counter() - clock, 3)
        with ParquetSink(out / "interactions.parquet", INTERACTIONS) as good:
            for r in _in_block_order(actors, todo):
                since = time.perf_counter()
                append_file(scratch / f"good-{r['block']}.parquet", good.write)
                append_file(scratch / f"bad-{r['block']}.parquet", quarantine)
                merge += time.perf_counter() - since
                chunks.append({"first_row": tally.rows_in, "rows": r["rows"], "result": r["result"]})
                tally.count(r["rows"], r["quarantined"], r["reasons"], r["result"]["success"])
                block_cpu[r["block"]] = round(r["cpu_seconds"], 3)
        write_chunk_results(results_dir, tally.gx_success, tally.rows_in, chunks)
        timings["actor_cpu_seconds"] = [round(t, 3) for t in ray.get([a.cpu_seconds.remote() for a in actors])]
    finally:
        for a in actors:
            ray.kill(a)
    wall = time.perf_counter() - clock
    timings |= {"check_seconds": round(wall - timings["setup_seconds"], 3), "merge_seconds": round(merge, 3),
                "wall_seconds": round(wall, 3), "block_cpu_seconds": block_cpu}
    (out / "engine.json").write_text(json.dumps(timings, indent=2))


def _in_block_order(actors: list, todo: list):
    """The blocks' results in block order, each as soon as it and every block before it are done (the actors take
    the next block as soon as they are free)."""
    from ray.util import ActorPool

    if not todo:
        return
    done, following = {}, 0
    for r in ActorPool(actors).map_unordered(lambda a, k: a.check.remote(k, *todo[k]), range(len(todo))):
        done[r["block"]] = r
        while following in done:
            yield done.pop(following)
            following += 1


class BlockValidator:
    """One worker's GX context and suite, and the validated items' ids, set up once; validates block after block."""

    def __init__(self, path: str, scratch: str, expectations, known_ids: pa.Array):
        self.path, self.scratch = path, Path(scratch)
        self.suite = Suite("interactions", expectations)  # an ephemeral context: no Data Docs
        self.known = pd.Index(known_ids.to_numpy(zero_copy_only=False))
        self.known.get_indexer(self.known[:1])  # build the hash table now, once
        self.cpu = time.process_time()  # the worker's CPU so far: its start, imports (GX's: seconds), this setup

    def check(self, block: int, groups: list[int], first: int, rows: int, skip: int) -> dict:
        """Validate rows [first, first + rows): write good-<block> and bad-<block>; return the GX result and counts."""
        started = time.process_time()
        chunk = pq.ParquetFile(self.path).read_row_groups(groups).slice(skip, rows).to_pandas()
        result, reasons = self.suite.run(with_known_item(chunk, self.known))
        good, bad = split_bad(chunk, reasons, "interactions")
        for name, frame, schema in (("good", good, INTERACTIONS), ("bad", bad, QUARANTINE)):
            with ParquetSink(self.scratch / f"{name}-{block}.parquet", schema) as sink:
                sink.write(frame)
        cpu = time.process_time() - started
        self.cpu += cpu
        return {"block": block, "rows": len(chunk), "quarantined": len(bad), "result": result,
                "reasons": {str(k): int(n) for k, n in bad["reason"].value_counts().items()}, "cpu_seconds": cpu}

    def cpu_seconds(self) -> float:
        return self.cpu

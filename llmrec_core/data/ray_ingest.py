"""`ingest` on a Ray cluster (`data.engine: ray`): one task per source, the local path's files.

1. Each source (an items file and an interactions file: line numbers are per file, so sources are independent) is
   read by its own Ray task, exactly as the local path reads it (source_reader.read_source: the items, then the
   interactions, so `domain_from: first_genre` finds its items' domains within the task). The task writes the
   source's items, interactions and quarantined rows as three part files under a scratch folder in the stage's
   temporary folder (each under a temporary name, then renamed: whole or absent) and returns its SourceCounts and
   CPU seconds. Ray runs as many at once as the cluster has CPUs; the largest source bounds the stage's wall time.
2. The driver appends the parts in source order, one row group at a time (memory: one chunk of `data.chunk_rows`),
   to interim/items.parquet, interactions.parquet and quarantine.parquet as soon as a source and every source
   before it are read: the local path's files, row for row. ingest.py then writes ingest_report.json (a fresh
   run_id) as on the local path.

interim/engine.json (what a projection to more workers starts from): the wall seconds of connecting to Ray (or
starting it), of reading the sources with the appends that overlap it (`read_seconds`, of which `merge_seconds` the
driver's appends) and in all, and each source's task CPU seconds, lines read and item lines read
(`source_cpu_seconds`, `source_events`, `source_items`).

Every node must see the sources and `<data.root>` (a shared filesystem). A task is not retried: a worker lost
mid-stage fails the stage with a one-line error, the other sources' tasks are cancelled and nothing is written
(the stage's outputs are swapped in only on success); a rerun writes the same files. A source that cannot be read
fails the stage with its own one-line error, as on the local path.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..config import Params, SourceConfig
from ..errors import UserError, WorkerLost
from .contract import INTERACTIONS, ITEMS, QUARANTINE
from .parquet_io import ParquetSink, append_file
from .ray_filter import connect, lost_worker_errors
from .source_reader import SourceCounts, read_source

TABLES = ("items", "interactions", "quarantine")  # each source's part files, appended in this order
READERS_FINISH_S = 600  # how long a failed ingest waits for its other sources' readers before removing their parts


def ingest_ray(out: Path, sources: list[tuple[SourceConfig, Path, Path]], params: Params,
               progress=None) -> list[SourceCounts]:
    """ingest._ingest_into on Ray: every source's rows to out/{items,interactions,quarantine}.parquet in source
    order, the engine's timings to out/engine.json; returns each source's counts."""
    clock = time.perf_counter()
    started = connect(params)
    import ray

    scratch = out / "engine-sources"
    scratch.mkdir()
    refs: list = []
    try:
        return _ingest(out, sources, params.data.chunk_rows, scratch, refs, progress, clock)
    except lost_worker_errors() as e:
        raise WorkerLost(f"a Ray worker was lost during ingest ({type(e).__name__}); nothing was written: "
                         "run `llmrec ingest` again") from None
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):  # a source the reader refuses: its own one-line message
            raise e.cause from None
        raise
    finally:
        # After a failure the other readers finish before their folder is removed, rather than being cancelled:
        # force-cancelling a task just as it completes aborts the driver in Ray 2.60 ("Tried to complete task
        # that was not pending"), which took the whole process down with no error of ours.
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=READERS_FINISH_S)
        shutil.rmtree(scratch, ignore_errors=True)
        if started:
            ray.shutdown()


def _ingest(out: Path, sources, chunk: int, scratch: Path, refs: list, progress, clock: float) -> list[SourceCounts]:
    import ray

    since_connect = time.perf_counter()
    read = ray.remote(_read_into_parts).options(max_retries=0)
    refs.extend(read.remote(src, str(items), str(inter), chunk, str(scratch), k)
                for k, (src, items, inter) in enumerate(sources))
    counts, cpu, merge = [], [], 0.0
    with (ParquetSink(out / "items.parquet", ITEMS) as items,
          ParquetSink(out / "interactions.parquet", INTERACTIONS) as inter,
          ParquetSink(out / "quarantine.parquet", QUARANTINE) as quarantine):
        for k, r in _in_source_order(refs):
            since = time.perf_counter()
            for name, sink in zip(TABLES, (items, inter, quarantine)):
                append_file(scratch / f"{name}-{k}.parquet", sink.write)
            merge += time.perf_counter() - since
            counts.append(r["counts"])
            cpu.append(round(r["cpu_seconds"], 3))
            if progress:
                progress(r["counts"].source, r["counts"].interactions)
    refs.clear()  # every task is done: nothing to cancel
    timings = {"engine": "ray", "tasks": len(sources), "sources": [c.source for c in counts],
               "rows": sum(c.interactions for c in counts), "chunk_rows": chunk,
               "connect_seconds": round(since_connect - clock, 3),
               "read_seconds": round(time.perf_counter() - since_connect, 3), "merge_seconds": round(merge, 3),
               "wall_seconds": round(time.perf_counter() - clock, 3), "source_cpu_seconds": cpu,
               "source_events": [c.interactions + c.interactions_quarantined for c in counts],
               "source_items": [c.items + c.items_quarantined for c in counts]}
    (out / "engine.json").write_text(json.dumps(timings, indent=2))
    return counts


def _in_source_order(refs: list):
    """(source, result) in source order, each as soon as it and every source before it are read; a failed source
    raises as soon as it fails, whatever its place."""
    import ray

    where = {ref: k for k, ref in enumerate(refs)}
    done, following, pending = {}, 0, list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        done[where[ready[0]]] = ray.get(ready[0])
        while following in done:
            yield following, done.pop(following)
            following += 1


def _read_into_parts(src: SourceConfig, items: str, inter: str, chunk: int, scratch: str, k: int) -> dict:
    """One source read into its three part files (<table>-<k>.parquet); its counts and CPU seconds."""
    started = time.process_time()
    parts = Path(scratch)
    with (ParquetSink(parts / f"items-{k}.parquet", ITEMS) as items_out,
          ParquetSink(parts / f"interactions-{k}.parquet", INTERACTIONS) as inter_out,
          ParquetSink(parts / f"quarantine-{k}.parquet", QUARANTINE) as quarantine):
        counts = read_source(src, Path(items), Path(inter), chunk, items_out.write, inter_out.write,
                             quarantine.write)
    return {"counts": counts, "cpu_seconds": time.process_time() - started}

"""The filter phase of `prepare` on a Ray cluster (`data.engine: ray`): the same rules as event_filter.py, with
users partitioned by a hash of their id.

1. Split (one task per block of row groups): each block of the validated file is read with its input row numbers
   and written as one Parquet file per user partition; the task returns its domains' event counts and first rows
   and its files' first rows.
2. The driver selects the domains (the same rule, from the summed counts) and orders the source files.
3. One actor per partition holds its users' events, ordered by user, time, file, line and input row, and runs the
   per-user filters: the user sample (the driver finds the cut over every partition's (hash, id) pairs), duplicates,
   consecutive repeats, then the k-core in rounds: each round the partitions count their items' live events, the
   driver sums them and names the items below the threshold, and each partition drops those items' events and its
   users below theirs, until nothing changes (the k-core is unique, so rounds reach the single-machine result).
   The items are numbered once for the whole stage (the driver merges the partitions' sorted ids; each partition
   finds its ids' numbers), so a round's counts are arrays the driver adds and its verdict a mask over the numbers;
   then users too short to split. Each partition writes its dropped events and keeps its kept ones in memory.
   Its heavy phases (load, the writes) run on at most as many partitions at once as the cluster has CPUs
   (`bounded`), so the memory peak is that many partitions' temporaries over what the others hold.
4. The driver merges the partitions' dropped events with DuckDB (out of core) into `dropped.parquet`, exactly as
   event_filter.py writes it. The kept events never reach the driver: the partitions index, split and write them
   (ray_prepare.py).

Every partition's files live under `<data.root>`, which every node must see (a shared filesystem). A worker lost
mid-stage fails the stage with a clear error and leaves no prepared data; rerunning starts from the validated data
and writes the same outputs.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Params
from .event_filter import LSTR, PreparationError, _literal, duplicate_mask, engine, repeat_mask, select_domains

COLUMNS = ["user_id", "item_id", "domain", "timestamp", "source_file", "source_line"]
PARTITION_KEY = "llmrec-partition"  # the hash key of user partitions (16 characters, as pandas wants)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def user_partition(user_ids: np.ndarray, partitions: int) -> np.ndarray:
    """Each user's partition: a stable hash of the id (the same on every node and run)."""
    hashed = pd.util.hash_array(np.asarray(user_ids, dtype=object), hash_key=PARTITION_KEY, categorize=True)
    return (hashed % np.uint64(partitions)).astype(np.int32)


def _user_hashes(ids: np.ndarray, seed: int) -> np.ndarray:
    """The user sample's hash (event_filter.user_sample_mask's)."""
    return pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=f"llmrec-users{seed:04d}", categorize=False)


def connect(params: Params):
    """Ray, at `data.ray_address` (a running cluster), or a local instance started for this stage. Returns whether
    this call started it (and so should stop it)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise PreparationError("data.engine / index.encode_engine 'ray' needs Ray: pip install -e '.[ray]'") from None

    if ray.is_initialized():
        return False
    ray.init(address=params.data.ray_address, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING", configure_logging=False)
    return True


def lost_worker_errors() -> tuple[type, ...]:
    """What Ray raises when a worker or node goes mid-stage, or the memory monitor kills a task: a stage fails with
    its one-line error on any of them."""
    import ray

    e = ray.exceptions
    return (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError, e.OutOfMemoryError)


@dataclass
class Filtered:
    """The filter phase's outcome: the partitions' actors, each holding its kept events, and the driver's totals."""

    actors: list
    domains: list[str]
    rows_in: int
    dropped: dict[str, int]  # events per reason, as event_filter.filter_events counts them
    timings: dict  # each phase's (engine.json)
    item_ids: pa.Array  # every item of the selected domains' events, sorted: the numbers the partitions count by
    kept_counts: np.ndarray  # the kept events of each of them


@contextmanager
def filtered_partitions(validated: Path, params: Params, dropped_path: Path, scratch: Path,
                        actor_class: type) -> Iterator[Filtered]:
    """event_filter.filter_events on Ray, with dropped.parquet written; the block runs the rest of the stage on
    the partitions' actors (`actor_class`: PartitionFilter or a subclass). `scratch` (under data.root) holds the
    partitions' files; it and the actors go when the block ends."""
    started = connect(params)
    import ray

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    actors = []  # filled as they start: each is killed, whatever fails
    try:
        yield _filter(validated, params, dropped_path, scratch, actor_class, actors)
    except lost_worker_errors() as e:
        raise PreparationError(f"a Ray worker was lost during prepare ({type(e).__name__}); nothing was written: "
                               "run `llmrec prepare` again") from None
    finally:
        for a in actors:
            ray.kill(a)
        shutil.rmtree(scratch, ignore_errors=True)
        if started:
            ray.shutdown()


def bounded(calls: list[Callable], width: int | None = None) -> list:
    """Start the calls (each starts an actor method and returns its ObjectRef) with at most `width` unfinished at
    once (default: the cluster's CPUs); returns their refs in order. A partition's heavy phases (load, index, the
    writes) need a few times the memory it holds between them: started all at once, every partition would peak
    together (about 127 bytes per event of the whole input on one machine), and it would not be faster, each being
    one CPU's work."""
    import ray

    width = width or max(1, int(ray.cluster_resources().get("CPU", 1)))
    refs, running = [], []
    for call in calls:
        if len(running) >= width:
            _, running = ray.wait(running, num_returns=1)
        refs.append(call())
        running.append(refs[-1])
    return refs


def _filter(validated: Path, params: Params, dropped_path: Path, scratch: Path, actor_class: type,
            actors: list) -> Filtered:
    import ray

    cfg, parts = params.prepare, params.data.partitions
    clock = time.perf_counter()
    meta = pq.ParquetFile(validated).metadata
    rows_in = meta.num_rows
    blocks, block, first, rows = [], [], 0, 0
    for g in range(meta.num_row_groups):  # blocks of row groups of about data.chunk_rows rows
        block.append(g)
        rows += meta.row_group(g).num_rows
        if rows - first >= params.data.chunk_rows or g == meta.num_row_groups - 1:
            blocks.append((block, first))
            block, first = [], rows
    split = ray.remote(_split_block)
    stats = ray.get([split.remote(str(validated), groups, offset, parts, str(scratch), k)
                     for k, (groups, offset) in enumerate(blocks)])
    timings = {"engine": "ray", "partitions": parts, "blocks": len(blocks), "events": rows_in,
               "split_seconds": round(time.perf_counter() - clock, 3),
               "split_cpu_seconds": [round(s["cpu_seconds"], 3) for s in stats]}
    domain_stats = pd.concat([s["domains"] for s in stats]).groupby("domain").agg(n=("n", "sum"), first=("first", "min"))
    sizes = domain_stats.sort_values(["n", "first"], ascending=[False, True])["n"].astype(int).to_dict()
    domains = select_domains(sizes, params)
    files = pd.concat([s["files"] for s in stats])  # files in the order of their first selected event
    files = files[files["domain"].isin(domains)].groupby("source_file")["first"].min().sort_values()
    file_rank = {name: rank for rank, name in enumerate(files.index)}

    actor = ray.remote(actor_class)
    actors.extend(actor.options(name=f"llmrec-prepare-{os.getpid()}-{p}").remote(p, str(scratch), domains, file_rank,
                                                                                 cfg.kcore_scope)
                  for p in range(parts))
    return _run_filters(actors, params, domains, dropped_path, scratch, rows_in, timings)


def _run_filters(actors: list, params: Params, domains: list[str], dropped_path: Path, scratch: Path,
                 rows_in: int, timings: dict) -> Filtered:
    """The partitions' filters and the driver's merge of their dropped events; `timings` (the split's) gets each
    phase's (engine.json: what a projection to more workers starts from)."""
    import ray

    cfg = params.prepare
    clock = time.perf_counter()
    ray.get(bounded([a.load.remote for a in actors]))
    reasons = ["domain not selected"]
    if cfg.user_sample is not None:
        keys = pd.concat(ray.get([a.user_hashes.remote(cfg.user_sample_seed) for a in actors]), ignore_index=True)
        chosen = min(cfg.user_sample, len(keys))
        pivot = tuple(keys.sort_values(["hash", "user_id"]).iloc[chosen - 1]) if chosen else None
        reasons.append(f"user outside the sample (prepare.user_sample: {chosen} of {len(keys)} users, "
                       f"seed {cfg.user_sample_seed})")
        ray.get([a.sample.remote(pivot, cfg.user_sample_seed, len(reasons) - 1) for a in actors])
    reasons.append("duplicate event")
    ray.get([a.drop_duplicates.remote(len(reasons) - 1) for a in actors])
    if cfg.drop_consecutive_repeats:
        reasons.append("consecutive repeat of the same item")
        ray.get([a.drop_repeats.remote(len(reasons) - 1) for a in actors])
    reasons.append(f"k-core ({cfg.kcore_scope}: user>={cfg.min_user_interactions}, item>={cfg.min_item_interactions})")
    started = time.perf_counter()
    item_ids = _union_sorted([a.distinct_items.remote() for a in actors])
    numbered = ray.put(item_ids)
    ray.get([a.number_items.remote(numbered) for a in actors])
    timings["item_numbering_seconds"] = round(time.perf_counter() - started, 3)
    rounds = []
    while True:  # the k-core's rounds: item counts are global, user counts per partition
        started = time.perf_counter()
        rare = ray.put(_summed([a.item_counts.remote() for a in actors], len(item_ids)) < cfg.min_item_interactions)
        changed = ray.get([a.kcore_round.remote(rare, cfg.min_user_interactions, len(reasons) - 1) for a in actors])
        rounds.append(round(time.perf_counter() - started, 3))
        if not any(changed):
            break
    timings["kcore_round_seconds"] = rounds
    reasons.append("user has fewer than 3 events (no train/valid/test split)")
    ray.get([a.drop_short_users.remote(len(reasons) - 1) for a in actors])
    left = np.sum(ray.get([a.domain_counts.remote(len(domains)) for a in actors]), axis=0)
    empty = sorted(name for name, n in zip(domains, left) if n == 0)
    if empty:
        raise PreparationError(
            f"domain(s) {empty} have no interactions left after filtering (k-core {cfg.kcore_scope}, "
            f"user>={cfg.min_user_interactions}, item>={cfg.min_item_interactions}); lower prepare.min_* "
            "or remove the domain(s)")
    kept = sum(ray.get(bounded([a.write_dropped.remote for a in actors])))
    timings["filter_seconds"] = round(time.perf_counter() - clock, 3)
    timings["partition_cpu_seconds"] = [round(t, 3) for t in ray.get([a.cpu_seconds.remote() for a in actors])]
    timings["partition_events"] = ray.get([a.size.remote() for a in actors])
    clock = time.perf_counter()
    with engine(scratch / "merge", params.data.memory_limit_mb) as con:
        counts = _write_dropped(con, scratch, dropped_path, reasons)
    if kept + sum(counts.values()) != rows_in:
        raise PreparationError("the partitions lost events: every input event must be either kept or dropped")
    timings["dropped_merge_seconds"] = round(time.perf_counter() - clock, 3)
    kept_counts = _summed([a.item_counts.remote() for a in actors], len(item_ids))
    return Filtered(actors, domains, rows_in, counts, timings, item_ids, kept_counts)


def _union_sorted(refs: list) -> pa.Array:
    """The distinct ids of the partitions' arrays, sorted, fetched one partition at a time (an item is in many)."""
    import ray

    present = pa.array([], LSTR)
    for ref in refs:
        present = pc.unique(pa.concat_arrays([present, ray.get(ref)]))
    return present.take(pc.sort_indices(present))


def _summed(refs: list, n: int) -> np.ndarray:
    """The partitions' count arrays (each over the stage's item numbers) added, one partition at a time."""
    import ray

    total = np.zeros(n, dtype=np.int64)
    for ref in refs:
        total += ray.get(ref)
    return total


def _split_block(path: str, groups: list[int], offset: int, parts: int, scratch: str, block: int) -> dict:
    """One block of row groups, written as one file per user partition (with input row numbers)."""
    started = time.process_time()
    table = pq.ParquetFile(path).read_row_groups(groups, columns=COLUMNS)
    table = table.append_column("row", pa.array(np.arange(offset, offset + len(table), dtype=np.int64)))
    part = user_partition(table.column("user_id").to_pandas().to_numpy(dtype=object), parts)
    for p in np.unique(part):
        folder = Path(scratch) / f"part={p}"
        folder.mkdir(exist_ok=True)
        tmp = folder / f"block-{block}.parquet.tmp"
        pq.write_table(table.filter(pa.array(part == p)), tmp)
        tmp.rename(tmp.with_suffix(""))
    named = table.select(["domain", "source_file", "row"]).to_pandas().dropna(subset=["domain"])
    return {"domains": named.groupby("domain")["row"].agg(n="size", first="min").reset_index(),
            "files": named.groupby(["domain", "source_file"])["row"].min().rename("first").reset_index(),
            "cpu_seconds": time.process_time() - started}


def _timed(method):
    """Count the method's CPU time in the actor's total (a worker's share of the stage, for projections)."""
    def timed(self, *args):
        started = time.process_time()
        try:
            return method(self, *args)
        finally:
            self.cpu = getattr(self, "cpu", 0.0) + time.process_time() - started
    timed.__name__, timed.__doc__ = method.__name__, method.__doc__
    return timed


def _return_freed_memory_at_once() -> None:
    """Have this process give what it frees back to the system at once, so that a partition holds its events and
    not its past phases' temporaries: Arrow allocates with malloc (its default, mimalloc, keeps freed memory), and
    every allocation over 1 MiB (an array of events) gets its own mapping, unmapped when freed (glibc's malloc
    would, once such an array is freed, serve the next ones up to 32 MiB from its heap, which keeps what they
    free)."""
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its own allocator's ways
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)


class PartitionFilter:
    """One partition's events and the filters' verdicts on them (0 kept, k: the k-th reason of the driver's list).

    An event is held as integer codes only (about 39 bytes): its user (int32, into the partition's sorted user ids),
    item (int32, into its distinct item ids), domain (int16, into the selected domains), time (int64), file (int32:
    the driver's file rank), line and input row (int64) and verdict (int8). The ids are Arrow arrays of the
    distinct values; the events' text columns are rebuilt from them (`take`) only for the dropped events written."""

    def __init__(self, part: int, scratch: str, domains: list[str], file_rank: dict[str, int], kcore_scope: str):
        _return_freed_memory_at_once()  # the actor has its process to itself
        self.part, self.folder = part, Path(scratch) / f"part={part}"
        self.domains, self.file_rank, self.kcore_scope = domains, file_rank, kcore_scope

    @_timed
    def load(self) -> None:
        """Read the partition a column at a time as codes, and order the selected domains' events by user, time,
        file, line and input row; the other domains' events go straight to outside.parquet."""
        files = sorted(self.folder.glob("block-*.parquet")) if self.folder.is_dir() else []
        self.domain_names = pa.array(self.domains, LSTR)
        self.file_names = pa.array(sorted(self.file_rank, key=self.file_rank.get), LSTR)
        d = _codes_in(_text_column(files, "domain"), self.domain_names)
        selected = d >= 0
        self._write_outside(files, selected)
        if selected.all():
            selected = slice(None)  # every event: a view, not a copy
        self.d = d[selected].astype(np.int16)
        del d
        self.file = _codes_in(_text_column(files, "source_file"), self.file_names)[selected]
        self.user_ids, self.u = _distinct_codes(_text_column(files, "user_id"), selected)
        self.item_ids, self.i = _distinct_codes(_text_column(files, "item_id"), selected)
        self.ts, self.line, self.row = (_int_column(files, name)[selected]
                                        for name in ("timestamp", "source_line", "row"))
        order = np.lexsort((self.row, self.line, self.file, self.ts, self.u))
        for name in ("u", "i", "d", "file", "ts", "line", "row"):
            setattr(self, name, getattr(self, name)[order])  # one array's copy at a time
        self.reason = np.zeros(len(self.u), dtype=np.int8)

    def _write_outside(self, files: list[Path], selected: np.ndarray) -> None:
        """outside.parquet: the events of the domains not selected, with every column (read a block at a time)."""
        schema = pq.read_schema(files[0]) if files else pa.schema(
            [(c, LSTR) for c in ["user_id", "item_id", "domain"]] + [("timestamp", pa.int64())]
            + [("source_file", LSTR), ("source_line", pa.int64()), ("row", pa.int64())])
        self.folder.mkdir(parents=True, exist_ok=True)  # a partition without events has no block files
        with pq.ParquetWriter(self.folder / "outside.parquet", schema) as writer:
            start = 0
            for f in files:
                n = pq.ParquetFile(f).metadata.num_rows
                outside = ~selected[start:start + n]
                if outside.any():
                    writer.write_table(pq.read_table(f).filter(pa.array(outside)))
                start += n

    def _drop(self, mask: np.ndarray, code: int) -> int:
        fresh = mask & (self.reason == 0)
        self.reason[fresh] = code
        return int(fresh.sum())

    @_timed
    def sample(self, pivot: tuple | None, seed: int, code: int) -> None:
        """Keep the users whose (hash, id) is at most the driver's cut (the sample's last user)."""
        if pivot is None:
            keep_user = np.zeros(len(self.user_ids), dtype=bool)
        else:
            hashed = _user_hashes(self.user_ids.to_numpy(zero_copy_only=False), seed)
            cut_hash, cut_id = np.uint64(pivot[0]), pivot[1]
            at_or_before = pc.less_equal(self.user_ids, pa.scalar(cut_id, self.user_ids.type)).to_numpy(
                zero_copy_only=False)
            keep_user = (hashed < cut_hash) | ((hashed == cut_hash) & at_or_before)
        self._drop(~keep_user[self.u], code)

    @_timed
    def user_hashes(self, seed: int) -> pd.DataFrame:
        ids = self.user_ids.to_numpy(zero_copy_only=False)
        return pd.DataFrame({"hash": _user_hashes(ids, seed), "user_id": ids})

    @_timed
    def drop_duplicates(self, code: int) -> None:
        self._drop(duplicate_mask(self.u, self.i, self.ts), code)

    @_timed
    def drop_repeats(self, code: int) -> None:
        self._drop(repeat_mask(self.u, self.i, self.reason == 0), code)

    def distinct_items(self) -> pa.Array:
        return self.item_ids

    @_timed
    def number_items(self, item_ids: pa.Array) -> None:
        """Each of this partition's items' number in the stage's (`item_ids`: every partition's, sorted)."""
        self.number = pc.search_sorted(item_ids, self.item_ids).to_numpy().astype(np.int32)
        self.n_numbers = len(item_ids)

    @_timed
    def item_counts(self) -> np.ndarray:
        """The live events of each item, by the stage's item numbers (number_items)."""
        return np.bincount(self.number[self.i[self.reason == 0]], minlength=self.n_numbers).astype(np.int32)

    @_timed
    def kcore_round(self, rare: np.ndarray, min_user: int, code: int) -> bool:
        """One round: drop the events of the items below the threshold everywhere (`rare`: by item number) and of
        this partition's user groups below theirs (both counted on the same live events). Returns whether anything
        was dropped."""
        alive = self.reason == 0
        key = self.u if self.kcore_scope == "mixed" else self.u.astype(np.int64) * len(self.domains) + self.d
        short = np.bincount(key[alive], minlength=int(key.max(initial=-1)) + 1) < min_user
        return self._drop(alive & (rare[self.number][self.i] | short[key]), code) > 0

    @_timed
    def drop_short_users(self, code: int) -> None:
        alive = self.reason == 0
        short = np.bincount(self.u[alive], minlength=len(self.user_ids)) < 3
        self._drop(short[self.u], code)

    @_timed
    def domain_counts(self, n: int) -> np.ndarray:
        return np.bincount(self.d[self.reason == 0], minlength=n)

    @_timed
    def write_dropped(self) -> int:
        """dropped.parquet of the partition (outside.parquet is written at load), with the keys the driver merges
        them by; returns how many events it keeps."""
        dropped = np.flatnonzero(self.reason > 0)
        table = pa.table({"user_id": self.user_ids.take(self.u[dropped]),
                          "item_id": self.item_ids.take(self.i[dropped]),
                          "domain": self.domain_names.take(self.d[dropped]), "timestamp": self.ts[dropped],
                          "source_file": self.file_names.take(self.file[dropped]),
                          "source_line": self.line[dropped], "row": self.row[dropped],
                          "file_rank": self.file[dropped], "reason_code": self.reason[dropped]})
        pq.write_table(table, self.folder / "dropped.parquet")
        return len(self.reason) - len(dropped)

    def cpu_seconds(self) -> float:
        return getattr(self, "cpu", 0.0)

    def size(self) -> int:
        return len(self.u)


def _text_column(files: list[Path], name: str) -> pa.ChunkedArray:
    """A text column of the block files as Parquet stores it: dictionary-encoded (an int32 index per event and
    each file's distinct values), never a string per event."""
    chunks = [pq.read_table(f, columns=[name], read_dictionary=[name]).column(0).combine_chunks() for f in files]
    return pa.chunked_array(chunks, chunks[0].type if chunks else pa.dictionary(pa.int32(), LSTR))


def _int_column(files: list[Path], name: str) -> np.ndarray:
    """An int64 column of the block files, read a file at a time into one array."""
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    values = np.empty(sum(sizes), dtype=np.int64)
    for f, start, n in zip(files, np.cumsum([0, *sizes]), sizes):
        values[start:start + n] = pq.read_table(f, columns=[name]).column(0)
    return values


def _codes_in(column: pa.ChunkedArray, values: pa.Array) -> np.ndarray:
    """Each event's place in `values` (int32; -1 for a value not there, or none), through its chunk's dictionary."""
    codes = [_places(chunk.dictionary, values)[chunk.indices.fill_null(len(chunk.dictionary)).to_numpy()]
             for chunk in column.chunks]
    return np.concatenate(codes) if codes else np.zeros(0, np.int32)


def _places(names: pa.Array, values: pa.Array) -> np.ndarray:
    """Each name's place in `values` (-1 if not there), then a -1 for a missing name."""
    return np.append(pc.index_in(names, value_set=values).fill_null(-1).to_numpy(), -1).astype(np.int32)


def _distinct_codes(column: pa.ChunkedArray, selected) -> tuple[pa.Array, np.ndarray]:
    """The distinct values of the selected events, sorted (large strings, as the prepared files hold ids), and each
    selected event's code into them. The chunks' dictionaries are sorted together (a hash table of the values would
    take several times their size)."""
    dictionaries = pa.chunked_array([c.dictionary for c in column.chunks], column.type.value_type)
    order = pc.sort_indices(dictionaries).to_numpy()
    ordered = dictionaries.take(order).combine_chunks()
    first = np.ones(len(order), dtype=bool)  # the first of its value in sorted order
    first[1:] = pc.not_equal(ordered[1:], ordered[:-1]).to_numpy(zero_copy_only=False)
    distinct = np.empty(len(order), dtype=np.int32)  # each dictionary entry's place among the distinct values
    distinct[order] = np.cumsum(first) - 1
    offsets = np.cumsum([0] + [len(c.dictionary) for c in column.chunks])
    codes = np.concatenate([distinct[start + c.indices.to_numpy()] for start, c in zip(offsets, column.chunks)]
                           or [np.zeros(0, np.int32)])
    return _used(ordered.filter(pa.array(first)).cast(LSTR), codes[selected])


def _used(values: pa.Array, codes: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Only the values some code names (a file's dictionary may also name ids of unselected events), renumbered."""
    used = np.zeros(len(values), dtype=bool)
    used[codes] = True
    renumber = (np.cumsum(used) - 1).astype(np.int32)
    return values.filter(pa.array(used)), renumber[codes]


def _write_dropped(con, scratch: Path, path: Path, reasons: list[str]) -> dict[str, int]:
    """dropped.parquet as event_filter.py writes it: events outside the selected domains in input order, then each
    filter's in time order (user, time, file, line, input row)."""
    from .event_filter import DROPPED

    con.register("reason_names", pa.table({"reason_code": np.arange(len(reasons), dtype=np.int8),
                                           "reason": pa.array(reasons, LSTR)}))
    outside = _literal(str(scratch / "part=*" / "outside.parquet"))
    dropped = _literal(str(scratch / "part=*" / "dropped.parquet"))
    queries = [
        f"SELECT user_id, item_id, domain, timestamp, source_file, source_line, {_literal(reasons[0])} AS reason "
        f"FROM read_parquet({outside}) ORDER BY row",
        f"SELECT user_id, item_id, domain, timestamp, source_file, source_line, reason FROM read_parquet({dropped}) "
        "JOIN reason_names USING (reason_code) ORDER BY reason_code, user_id, timestamp, file_rank, source_line, row",
    ]
    counts = {reasons[0]: con.sql(f"SELECT count(*) FROM read_parquet({outside})").fetchall()[0][0]}
    by_code = dict(con.sql(f"SELECT reason_code, count(*) FROM read_parquet({dropped}) GROUP BY 1").fetchall())
    for k, name in enumerate(reasons[1:], start=1):
        counts[name] = int(by_code.get(k, 0))
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, DROPPED, compression="zstd") as writer:
        for query in queries:
            for batch in con.sql(query).to_arrow_reader(1_000_000):
                writer.write_table(pa.Table.from_batches([batch]).cast(DROPPED))
    tmp.replace(path)
    ranked = sorted((name for name in counts if counts[name]), key=lambda name: -counts[name])  # as event_filter.py
    return {name: counts[name] for name in ranked}

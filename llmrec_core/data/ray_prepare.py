"""`prepare` on a Ray cluster (`data.engine: ray`): after the filters (ray_filter.py), each user partition indexes,
splits and writes its own users' rows; the driver holds only what is global and small (user ids, the catalogue,
per-item counts, the manifest's counts), never the events.

1. Each partition names its kept users (sorted); the filters' last item counts name the kept items. The driver
   ranks the user ids (user_idx, as the local path numbers them: by id), builds the catalogue from the items
   present (item_idx: by domain, then id) and writes users.parquet; it hands each partition its users' user_idx,
   and the catalogue's ids through the object store.
2. Each partition codes its events, splits each user's history (leave-one-out) and returns its items' training
   counts; the driver sums them (one partition at a time) into the item groups and writes items.parquet.
3. Each partition writes its rows of the user tables (events, sequences_mixed, sequences_in_domain, eval_mixed,
   eval_in_domain) as `prepared/partitions/<table>/part-<p>.parquet` (a partition without users writes none), with
   the single files' schema, and returns its share of the manifest's counts (manifest.py).
4. The driver merges each table's parts with DuckDB (out of core) into the single file the local path writes: the
   same rows in the same order (by user_idx; eval rows every valid target first, then every test target), the
   same schema. Training, evaluation and serving read the single files; the partitioned datasets stay beside them.

`prepare.time_split` then rewrites the single files on the driver, in memory, as on one machine (and removes the
partitioned datasets, which would disagree).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Params
from .event_filter import BATCH_ROWS, LSTR, _literal, engine
from .manifest import build_manifest, sum_counts
from .prepared_tables import (PARTITIONS, USER_TABLES, catalogue, leave_one_out, missing_items, setting_files,
                              with_groups, write_catalogue, write_settings)
from .ray_filter import PartitionFilter, _timed, bounded, filtered_partitions
from .sequences import group_starts
from .splits import GROUPS


def prepare_on_ray(validated: Path, items: pd.DataFrame, params: Params, out: Path, scratch: Path) -> dict:
    """Filter `validated` on Ray and write into `out` what the local path writes, plus the partitioned datasets
    and engine.json (each phase's timings); returns the manifest."""
    import ray

    cfg = params.prepare
    with filtered_partitions(validated, params, out / "dropped.parquet", scratch, Partition) as f:
        clock = time.perf_counter()
        user_ids, user_idx = _rank_users(ray.get([a.kept_users.remote() for a in f.actors]))
        kept_items = f.item_ids.filter(pa.array(f.kept_counts > 0)).to_numpy(zero_copy_only=False)
        catalog = catalogue(items, kept_items, f.domains, cfg.title_max_chars)
        by_id = ray.put(_by_id(pa.array(catalog["item_id"], LSTR)))
        refs = bounded([lambda a=a, idx=idx: a.index.remote(idx, by_id) for a, idx in zip(f.actors, user_idx)])
        missing, train_count = 0, np.zeros(len(catalog), dtype=np.int64)
        for ref in refs:  # one partition's counts at a time
            lost, trained, n = ray.get(ref)
            missing += lost
            train_count[trained] += n
        if missing:
            raise missing_items(missing)
        with_groups(catalog, train_count, cfg.tail_fraction)
        write_catalogue(out, catalog, user_ids)
        f.timings["index_seconds"] = round(time.perf_counter() - clock, 3)

        clock = time.perf_counter()
        groups = ray.put(pd.Categorical(catalog["group"], categories=GROUPS).codes)
        shares = ray.get(bounded([lambda a=a: a.write_parts.remote(groups, str(out / PARTITIONS), cfg.max_history)
                                  for a in f.actors]))
        f.timings["write_seconds"] = round(time.perf_counter() - clock, 3)
        cpu = ray.get([a.cpu_seconds.remote() for a in f.actors])
        f.timings["settings_cpu_seconds"] = [round(t - t0, 3) for t, t0 in zip(cpu, f.timings["partition_cpu_seconds"])]

        clock = time.perf_counter()
        with engine(scratch / "merge", params.data.memory_limit_mb) as con:
            merge_parts(con, out / PARTITIONS, out)
        f.timings["tables_merge_seconds"] = round(time.perf_counter() - clock, 3)
        manifest = build_manifest(sum_counts([s for s in shares if s is not None]), catalog, f.domains, f.rows_in,
                                  f.dropped, params)
        (out / "engine.json").write_text(json.dumps(f.timings, indent=2))
    return manifest


def _rank_users(per_partition: list[pa.Array]) -> tuple[pa.Array, list[np.ndarray]]:
    """Every kept user id in user_idx order (sorted), and each partition's users' user_idx (partitions list their
    users sorted, and no user is in two)."""
    ids = pa.concat_arrays(per_partition)
    order = pc.sort_indices(ids).to_numpy()
    rank = np.empty(len(ids), dtype=np.int32)
    rank[order] = np.arange(len(ids), dtype=np.int32)
    return ids.take(pa.array(order)), np.split(rank, np.cumsum([len(p) for p in per_partition])[:-1])


def _by_id(catalog_ids: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The catalogue's ids sorted, and the item_idx of each."""
    order = pc.sort_indices(catalog_ids)
    return catalog_ids.take(order), order.to_numpy().astype(np.int32)


def _item_idx(ids: pa.Array, by_id: tuple[pa.Array, np.ndarray]) -> np.ndarray:
    """Each id's item_idx (-1 outside the catalogue), by binary search in the catalogue sorted by id (_by_id): no
    hash table of the whole catalogue in every partition."""
    sorted_ids, sorted_idx = by_id
    if not len(sorted_ids):
        return np.full(len(ids), -1, dtype=np.int32)
    at = np.minimum(pc.search_sorted(sorted_ids, ids).to_numpy().astype(np.int64), len(sorted_ids) - 1)
    found = pc.equal(sorted_ids.take(at), ids).to_numpy(zero_copy_only=False)
    return np.where(found, sorted_idx[at], -1).astype(np.int32)


def merge_parts(con, parts: Path, out: Path) -> None:
    """Each user table's part files as the single file the local path writes: its rows, its order, its schema."""
    for name, path in setting_files(out).items():
        schema = pq.read_schema(next((parts / name).glob("part-*.parquet")))
        valid_first = "\"split\" = 'test', " if name.startswith("eval") else ""
        # a user's rows are all in one part, in their order there
        query = (f"SELECT * EXCLUDE (file_row_number) FROM read_parquet({_literal(parts / name / 'part-*.parquet')}, "
                 f"file_row_number = true) ORDER BY {valid_first}user_idx, file_row_number")
        tmp = path.with_suffix(".tmp")
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in con.sql(query).to_arrow_reader(BATCH_ROWS):
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
        tmp.replace(path)


class Partition(PartitionFilter):
    """A user partition: its filters (PartitionFilter), then indexing, the split and its rows of the user tables."""

    @_timed
    def kept_users(self) -> pa.Array:
        """The ids of the users with kept events, sorted (the order of their codes here)."""
        return self.user_ids.filter(pa.array(np.bincount(self.u[self.reason == 0], minlength=len(self.user_ids)) > 0))

    @_timed
    def index(self, user_idx: np.ndarray, by_id: tuple[pa.Array, np.ndarray]) -> tuple[int, np.ndarray, np.ndarray]:
        """Code the kept events (user_idx: the driver's, for kept_users; item_idx: the id's place in the catalogue,
        `by_id`: _by_id's) and split them. Returns how many events name an item outside the catalogue, and the
        training events per item (item_idx, count)."""
        kept = self.reason == 0
        item_idx = _item_idx(self.item_ids, by_id)[self.i[kept]]
        if (item_idx < 0).any():
            return int((item_idx < 0).sum()), np.zeros(0, np.int64), np.zeros(0, np.int64)
        users = np.repeat(np.asarray(user_idx, dtype=np.int32), group_starts(self.u[kept])[1])
        domain, timestamp = self.d[kept], self.ts[kept]
        del self.user_ids, self.item_ids, self.u, self.i, self.d, self.ts, self.file, self.line, self.row, kept
        self.ev = leave_one_out(users, item_idx, domain, timestamp, self.domains)
        trained = np.bincount(item_idx[self.ev.split_code == 0])
        return 0, np.flatnonzero(trained), trained[trained > 0]

    @_timed
    def write_parts(self, group_codes: np.ndarray, folder: str, max_history: int) -> dict | None:
        """This partition's rows of the user tables as `folder`/<table>/part-<p>.parquet (item groups: codes into
        GROUPS); returns its share of the manifest's counts, or None (and no files) without users."""
        ev, self.ev = self.ev, None
        if not len(ev.starts):
            return None
        ev.groups = np.asarray(GROUPS, dtype=object)[group_codes]
        files = {name: Path(folder) / name / f"part-{self.part:05d}.parquet" for name in USER_TABLES}
        for path in files.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        return write_settings(files, ev, max_history)

"""The first phase of `prepare`, out of core: select domains, order each user's events in time, drop
duplicates, consecutive repeats, the k-core's leftovers and users too short to split.

DuckDB reads the validated Parquet file, turns the string columns into integer codes and sorts, spilling to
disk beyond `data.memory_limit_mb`; the filters then run in numpy over those integer arrays (about 30 bytes
per event), so tens of millions of events fit on a small machine. Every input event is either kept or written
to `dropped.parquet` with its reason, in the order the filters ran.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Params
from ..errors import UserError

LSTR = pa.large_string()  # what pandas writes for text; the prepared files keep that type
DROPPED = pa.schema([("user_id", LSTR), ("item_id", LSTR), ("domain", LSTR), ("timestamp", pa.int64()),
                     ("source_file", LSTR), ("source_line", pa.int64()), ("reason", LSTR)])
BATCH_ROWS = 1_000_000


class PreparationError(UserError, ValueError):
    """The data cannot be prepared as configured (for example a domain left empty)."""


@dataclass
class KeptEvents:
    """The events that survive the filters, user-major and in time order, as integer codes."""

    user: np.ndarray  # int32 code into user_ids; ids are sorted, so users follow in id order
    user_ids: pa.Array  # every user id of the selected domains, sorted
    item: np.ndarray  # int32 code into item_ids
    item_ids: np.ndarray  # every item id of the selected domains, sorted
    domain: np.ndarray  # int16 index into domains
    domains: list[str]
    timestamp: np.ndarray  # int64
    rows_in: int
    dropped: dict[str, int]  # events per reason, most frequent first (ties in the order the filters ran)


def _literal(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@contextmanager
def engine(workdir: Path, memory_mb: int, threads: int | None = None) -> Iterator:
    """A DuckDB connection on a scratch database in `workdir` (removed afterwards) that spills past `memory_mb`."""
    import duckdb

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    con = duckdb.connect(str(workdir / "engine.duckdb"))
    try:
        con.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
        con.execute(f"SET temp_directory = {_literal(workdir / 'spill')}")
        con.execute("SET preserve_insertion_order = true")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        yield con
    finally:
        con.close()
        shutil.rmtree(workdir, ignore_errors=True)


def select_domains(sizes: dict[str, int], params: Params) -> list[str]:
    """The domains to keep: `data.domains`, or the `data.top_domains` largest, or all; a named domain without
    data is an error. `sizes` holds events per domain, largest first."""
    if params.data.domains:
        empty = [d for d in params.data.domains if d not in sizes]
        if empty:
            raise PreparationError(
                f"domain(s) {empty} have no valid interactions (found: {sorted(sizes)}); "
                "fix data.domains in params.yaml or the sources"
            )
        return list(params.data.domains)
    if params.data.top_domains:
        return list(sizes)[: params.data.top_domains]
    return sorted(sizes)


def kcore_mask(user_key: np.ndarray, item_key: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Iterative k-core: keep events whose user group and item both have enough kept events."""
    alive = np.ones(len(user_key), dtype=bool)
    while True:
        u_count = np.bincount(user_key[alive], minlength=user_key.max(initial=-1) + 1)
        i_count = np.bincount(item_key[alive], minlength=item_key.max(initial=-1) + 1)
        keep = alive & (u_count[user_key] >= min_user) & (i_count[item_key] >= min_item)
        if keep.sum() == alive.sum():
            return keep
        alive = keep


def user_sample_mask(user_ids: np.ndarray, size: int, seed: int) -> np.ndarray:
    """True for the `size` users whose seeded hash of the id is smallest: a uniform sample that depends only on the
    ids and the seed (not on file order, engine or partitioning)."""
    hashed = pd.util.hash_array(np.asarray(user_ids, dtype=object), hash_key=f"llmrec-users{seed:04d}",
                                categorize=False)
    mask = np.zeros(len(user_ids), dtype=bool)
    mask[np.argsort(hashed, kind="stable")[:size]] = True
    return mask


def duplicate_mask(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Events (user-major, time-ordered) repeating an earlier event's (user, item, timestamp)."""
    mask = np.zeros(len(user), dtype=bool)
    if len(user) < 2:
        return mask
    same_moment = (user[1:] == user[:-1]) & (timestamp[1:] == timestamp[:-1])  # as the previous event
    # only events sharing their (user, timestamp) with another can be duplicates: usually a few
    shared = np.flatnonzero(np.concatenate([[False], same_moment]) | np.concatenate([same_moment, [False]]))
    if not len(shared):
        return mask
    moment = np.cumsum(np.concatenate([[True], ~same_moment[shared[1:] - 1] | (np.diff(shared) > 1)]))
    order = np.lexsort((item[shared], moment))  # stable: the first of equal events stays first
    same = (moment[order][1:] == moment[order][:-1]) & (item[shared][order][1:] == item[shared][order][:-1])
    mask[shared[order[1:][same]]] = True
    return mask


def repeat_mask(user: np.ndarray, item: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Alive events whose item equals the user's previous alive event's item."""
    idx = np.flatnonzero(alive)
    same = (user[idx][1:] == user[idx][:-1]) & (item[idx][1:] == item[idx][:-1])
    mask = np.zeros(len(user), dtype=bool)
    mask[idx[1:][same]] = True
    return mask


def filter_events(con, validated: Path, params: Params, dropped_path: Path) -> KeptEvents:
    """Filter `validated` (the interactions that passed validation); write every dropped event to `dropped_path`."""
    cfg = params.prepare
    con.execute(f"CREATE VIEW src AS SELECT file_row_number AS row, user_id, item_id, domain, timestamp, source_file, "
                f"source_line FROM read_parquet({_literal(validated)}, file_row_number = true)")
    rows_in = con.sql("SELECT count(*) FROM src").fetchall()[0][0]
    sizes = dict(con.sql("SELECT domain, count(*) AS n FROM src WHERE domain IS NOT NULL GROUP BY domain "
                         "ORDER BY n DESC, min(row)").fetchall())
    domains = select_domains(sizes, params)
    con.execute("CREATE TABLE domains (domain VARCHAR, d SMALLINT)")
    con.executemany("INSERT INTO domains VALUES (?, ?)", [(name, k) for k, name in enumerate(domains)])
    con.execute("CREATE VIEW selected AS SELECT * FROM src JOIN domains USING (domain)")
    # Integer codes. Users sorted by id (ties in time keep file order, as the files were read).
    con.execute("CREATE TABLE users AS SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1)::INTEGER AS u "
                "FROM (SELECT DISTINCT user_id FROM selected)")
    con.execute("CREATE TABLE items AS SELECT item_id, (row_number() OVER (ORDER BY item_id) - 1)::INTEGER AS i "
                "FROM (SELECT DISTINCT item_id FROM selected)")
    con.execute("CREATE TABLE files AS SELECT source_file, (row_number() OVER (ORDER BY min(row)) - 1)::INTEGER "
                "AS f FROM selected GROUP BY source_file")
    events = _ordered_events(con, sum(sizes[name] for name in domains))

    reasons = {"domain not selected": None}
    reason = np.zeros(len(events["row"]), dtype=np.int8)  # 0 kept, k: the k-th reason of `reasons`
    u, i, d, ts = events["u"], events["i"], events["d"], events["timestamp"]

    def drop(mask: np.ndarray, why: str) -> None:
        reasons[why] = None
        reason[mask & (reason == 0)] = len(reasons) - 1

    if cfg.user_sample is not None:
        ids = con.sql("SELECT user_id FROM users ORDER BY u").to_arrow_table().column(0).to_numpy(zero_copy_only=False)
        sampled = user_sample_mask(ids, cfg.user_sample, cfg.user_sample_seed)
        drop(~sampled[u], f"user outside the sample (prepare.user_sample: {int(sampled.sum())} of {len(ids)} users, "
                          f"seed {cfg.user_sample_seed})")
    drop(duplicate_mask(u, i, ts), "duplicate event")
    if cfg.drop_consecutive_repeats:
        drop(repeat_mask(u, i, reason == 0), "consecutive repeat of the same item")
    alive = np.flatnonzero(reason == 0)
    user_key = u[alive] if cfg.kcore_scope == "mixed" else u[alive].astype(np.int64) * len(domains) + d[alive]
    keep = kcore_mask(user_key, i[alive], cfg.min_user_interactions, cfg.min_item_interactions)
    kcore = np.zeros(len(reason), dtype=bool)
    kcore[alive[~keep]] = True
    drop(kcore, f"k-core ({cfg.kcore_scope}: user>={cfg.min_user_interactions}, item>={cfg.min_item_interactions})")
    per_user = np.bincount(u[reason == 0], minlength=int(u.max(initial=-1)) + 1)
    drop(per_user[u] < 3, "user has fewer than 3 events (no train/valid/test split)")

    kept = reason == 0
    left = np.bincount(d[kept], minlength=len(domains))
    empty = sorted(name for name, n in zip(domains, left) if n == 0)
    if empty:
        raise PreparationError(
            f"domain(s) {empty} have no interactions left after filtering (k-core {cfg.kcore_scope}, "
            f"user>={cfg.min_user_interactions}, item>={cfg.min_item_interactions}); lower prepare.min_* "
            "or remove the domain(s)"
        )
    counts = _write_dropped(con, dropped_path, list(reasons), reason, events.pop("row"))
    assert int(kept.sum()) + sum(counts.values()) == rows_in, "every input event is either kept or dropped"
    del u, i, d, ts  # the arrays below are compacted one by one, each freed as it goes
    kept_columns = {name: events.pop(name)[kept] for name in ("u", "i", "d", "timestamp")}
    item_ids = con.sql("SELECT item_id FROM items ORDER BY i").fetchnumpy()["item_id"]
    user_ids = con.sql("SELECT user_id FROM users ORDER BY u").to_arrow_table().column(0).combine_chunks()
    return KeptEvents(kept_columns["u"], user_ids, kept_columns["i"], np.asarray(item_ids, dtype=object),
                      kept_columns["d"], domains, kept_columns["timestamp"], rows_in, counts)


def _ordered_events(con, n: int) -> dict[str, np.ndarray]:
    """The selected events as integer arrays, ordered by user, time, file and line (then input order)."""
    columns = {"u": np.int32, "i": np.int32, "d": np.int16, "timestamp": np.int64, "row": np.int64}
    out = {name: np.empty(n, dtype=dtype) for name, dtype in columns.items()}
    reader = con.sql(
        "SELECT u, i, d, timestamp, row FROM selected JOIN users USING (user_id) JOIN items USING (item_id) "
        "JOIN files USING (source_file) ORDER BY u, timestamp, f, source_line, row").to_arrow_reader(BATCH_ROWS)
    filled = 0
    for batch in reader:
        size = batch.num_rows
        if filled + size > n:
            raise PreparationError("more events than counted while ordering them; is the validated file changing?")
        for name, dtype in columns.items():
            out[name][filled:filled + size] = batch.column(name).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        filled += size
    if filled != n:  # a null user, item, timestamp or file would vanish in the joins: never silently
        raise PreparationError(f"{n - filled} of {n} events lack a user, item, timestamp or source file; "
                               "run `llmrec validate` again")
    return out


def _write_dropped(con, path: Path, reasons: list[str], reason: np.ndarray, rows: np.ndarray) -> dict[str, int]:
    """dropped.parquet: events outside the selected domains (input order), then each filter's (time order)."""
    counts = {reasons[0]: con.sql("SELECT count(*) FROM src WHERE domain IS NULL OR domain NOT IN "
                                  "(SELECT domain FROM domains)").fetchall()[0][0]}
    dropped_at = np.flatnonzero(reason)
    order = dropped_at[np.argsort(reason[dropped_at], kind="stable")]
    for k, name in enumerate(reasons[1:], start=1):
        counts[name] = int((reason == k).sum())
    con.register("drops", pa.table({"seq": np.arange(len(order), dtype=np.int64), "row": rows[order],
                                    "reason_code": reason[order]}))
    con.register("reason_names", pa.table({"reason_code": np.arange(len(reasons), dtype=np.int8),
                                           "reason": pa.array(reasons, LSTR)}))
    queries = [
        "SELECT user_id, item_id, domain, timestamp, source_file, source_line, "
        f"{_literal(reasons[0])} AS reason FROM src WHERE domain IS NULL OR domain NOT IN "
        "(SELECT domain FROM domains) ORDER BY row",
        "SELECT user_id, item_id, domain, timestamp, source_file, source_line, reason FROM drops "
        "JOIN src USING (row) JOIN reason_names USING (reason_code) ORDER BY seq",
    ]
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, DROPPED, compression="zstd") as writer:
        for query in queries:
            for batch in con.sql(query).to_arrow_reader(BATCH_ROWS):
                writer.write_table(pa.Table.from_batches([batch]).cast(DROPPED))
    tmp.replace(path)
    con.unregister("drops")
    ranked = sorted((name for name in counts if counts[name]), key=lambda name: -counts[name])  # stable
    return {name: counts[name] for name in ranked}

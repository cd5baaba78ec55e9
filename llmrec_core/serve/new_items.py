"""New items between trainings: read, validate (the same GX item checks), quarantine, embed and index.

A new-items file is JSON lines or CSV with `item_id`, `domain` and `title` (`item_id` is the native id;
it is prefixed with the domain as at ingest). Rows that cannot be read, break an expectation, name a
domain the index does not have, or are already indexed go to `<data root>/new_items/quarantine.parquet`
with file, line and reason; the index is touched only when every check has run. Accepted items are
appended to the log `<data root>/new_items/accepted.jsonl` (fsync'd before any answer), which every index
load and rebuild replays, and counted towards the retraining threshold. `accept_batch` does all of it under the
store's writer lock, for a file and for `POST /items` alike; a batch retried after it was applied gets the
first answer again (by its idempotency key, or because every item is already accepted as it is now).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Params
from ..data.contract import item_expectations, make_item_id
from ..data.sources.common import InputError, bad_frame, check_input_file, clean_titles, iter_delimited, iter_json_records
from ..data.validate import run_suite
from ..errors import UserError
from .item_store import FIELDS, batch_digest, log_items, read_log, record_outcome, since_training, writer
from .recommend import Recommender



@dataclass
class NewItemsResult:
    """What adding new items did: the items accepted and their ids, those quarantined (with reasons), and whether
    the file was rejected as a whole."""

    accepted: pd.DataFrame  # item_id, domain, title, source_file, source_line
    quarantined: pd.DataFrame  # source_file, source_line, reason, record
    added_ids: np.ndarray
    since_training: int  # accepted items since the last training, this file included
    rejected: bool  # more than validation.max_bad_fraction bad: nothing from the file was indexed
    answer: dict  # what `POST /items` answers (and a retry of the batch gets again)

    @property
    def status(self) -> int:
        """The HTTP status of the answer: 200 when items were accepted and the batch not rejected."""
        return 200 if self.answer["accepted"] and not self.answer["rejected"] else 422


class IdempotencyConflict(UserError):
    """An idempotency key already used for a batch with other items."""


def read_new_items(path: Path, chunk_rows: int = 100_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows (item_id, domain, title, source file and line) of a JSONL or CSV new-items file, and the lines that could not be read."""
    check_input_file(path, "new-items")
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        chunks = list(iter_json_records(path, chunk_rows, FIELDS))
    elif name.endswith((".csv", ".csv.gz")):
        chunks = list(iter_delimited(path, chunk_rows, delimiter=","))
        for frame, _ in chunks:
            missing = set(FIELDS) - set(frame.columns)
            if missing:
                raise InputError(f"{path}: missing columns {sorted(missing)}")
    else:
        raise InputError(f"{path}: new-items files are .jsonl or .csv")
    rows = pd.concat([c[0] for c in chunks], ignore_index=True) if chunks else pd.DataFrame(columns=FIELDS)
    bad = pd.concat([c[1] for c in chunks], ignore_index=True) if chunks else bad_frame(path, [], [], [])
    rows = rows[FIELDS + ["source_line"]].copy()
    for col in ("item_id", "domain"):
        rows[col] = rows[col].astype("string").str.strip()
    rows["title"] = clean_titles(rows["title"]).replace("", pd.NA)
    rows["item_id"] = make_item_id(rows["domain"], rows["item_id"]).astype("string")
    rows["source_file"] = str(path)
    return rows.reset_index(drop=True), bad


def check_new_items(params: Params, rows: pd.DataFrame, known_ids: set[str], domains: list[str]) -> pd.Series:
    """A reason string per failing row index: GX item expectations, plus indexed domains and unseen ids."""
    suite = item_expectations(params.validation.max_title_chars, domains)
    _, reasons = run_suite("new_items", rows.drop(columns=["source_file"]), suite)
    seen = rows["item_id"].isin(known_ids).to_numpy()
    for idx in np.flatnonzero(seen):
        reasons.loc[idx] = "; ".join(filter(None, [reasons.get(idx), "item_id already indexed"]))
    return reasons


def screen_new_items(params: Params, rows: pd.DataFrame, unreadable: pd.DataFrame, source: str | Path,
                     known_ids: set[str], domains: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """(accepted rows, quarantined records, whether the whole batch was rejected) for rows read from `source`:
    the GX item checks, indexed domains and unseen ids; more than validation.max_bad_fraction bad rejects all."""
    reasons = check_new_items(params, rows, known_ids, domains)
    bad_mask = np.zeros(len(rows), dtype=bool)
    bad_mask[reasons.index.to_numpy(dtype=np.int64)] = True
    bad = rows[bad_mask]
    quarantined = pd.concat([unreadable, bad_frame(source, bad["source_line"].tolist(),
                                                   reasons.reindex(bad.index).tolist(), _records(bad))],
                            ignore_index=True)
    accepted = rows[~bad_mask].reset_index(drop=True)
    total = len(rows) + len(unreadable)
    rejected = total == 0 or len(quarantined) / total > params.validation.max_bad_fraction
    if rejected and len(accepted):  # the whole file is suspect: quarantine its good rows too
        why = f"file rejected: {len(quarantined)} of {total} rows bad (> validation.max_bad_fraction)"
        quarantined = pd.concat([quarantined, bad_frame(source, accepted["source_line"].tolist(),
                                                        [why] * len(accepted), _records(accepted))],
                                ignore_index=True)
        accepted = accepted.iloc[:0]
    return accepted, quarantined, rejected


def new_item_rows(items: list[dict], source: str) -> pd.DataFrame:
    """Items given as records (the HTTP service's POST /items) as `read_new_items` returns them."""
    rows = pd.DataFrame(items, columns=FIELDS).astype("string")
    rows["source_line"] = np.arange(1, len(rows) + 1, dtype=np.int64)
    for col in ("item_id", "domain"):
        rows[col] = rows[col].str.strip()
    rows["title"] = clean_titles(rows["title"]).replace("", pd.NA)
    rows["item_id"] = make_item_id(rows["domain"], rows["item_id"]).astype("string")
    rows["source_file"] = source
    return rows


def ingest_new_items(params: Params, path: Path) -> NewItemsResult:
    """Validate a new-items file, embed and index what passes, quarantine the rest (with reasons)."""
    with writer(params):
        recommender = Recommender.load(params)  # fail early (no index, stale index) before anything is written
        rows, unreadable = read_new_items(path)
        return accept_batch(params, recommender, rows, unreadable, path)


def accept_batch(params: Params, recommender: Recommender, rows: pd.DataFrame, unreadable: pd.DataFrame,
                 source: str | Path, key: str | None = None) -> NewItemsResult:
    """Screen a batch, and log (durably), index and save what passes, under the writer lock; the index is that
    of `recommender`, caught up with the log first. A batch already applied (the same `key`, or every item
    already accepted with the same content) gets its answer again and changes nothing."""
    with writer(params):
        recommender.catch_up()
        batches = read_log(params)
        digest = batch_digest(rows)
        if key is not None:
            prior = next((b for b in batches if b.key == key), None)
            if prior is not None and prior.digest != digest:
                raise IdempotencyConflict(f"idempotency key {key!r} was used for a batch with other items")
            if prior is not None:
                return _replayed(prior.answer, rows, since_training(params, batches))
        if not len(unreadable):
            repeat = _already_accepted(params, recommender, rows, batches)
            if repeat is not None:
                return repeat
        accepted, quarantined, rejected = screen_new_items(params, rows, unreadable, source,
                                                           set(recommender.index.catalog["item_id"]),
                                                           recommender.domains)
        ids = recommender.next_ids(len(accepted))
        since = since_training(params, batches) + len(accepted)
        answer = {"accepted": accepted["item_id"].tolist(), "index_ids": ids.tolist(),
                  "quarantined": quarantined[["source_line", "reason"]].rename(columns={"source_line": "position"})
                  .to_dict("records"), "rejected": bool(rejected), "since_training": since}
        if len(accepted):
            recommender.persist_and_add(accepted, key, digest, answer)
        record_outcome(params, quarantined, source, len(accepted))
        return NewItemsResult(accepted, quarantined, ids, since, rejected, answer)


def _replayed(answer: dict, rows: pd.DataFrame, since: int) -> NewItemsResult:
    accepted = rows[rows["item_id"].isin(answer["accepted"])].reset_index(drop=True)
    return NewItemsResult(accepted, bad_frame("", [], [], []), np.asarray(answer["index_ids"], dtype=np.int64), since,
                          answer["rejected"], answer)


def _already_accepted(params: Params, recommender: Recommender, rows: pd.DataFrame, batches: list) -> NewItemsResult | None:
    """The success answer for a batch whose every item is already accepted with the same domain and title (a
    retry without a key), or None."""
    logged = log_items(batches).drop_duplicates("item_id").set_index("item_id")
    if not len(rows) or not len(logged) or rows["item_id"].isna().any():
        return None
    ids = rows["item_id"].astype(str).tolist()
    if len(set(ids)) != len(ids) or not set(ids) <= set(logged.index):
        return None
    same = (logged.loc[ids, "domain"].astype(str).to_numpy() == rows["domain"].astype(str).to_numpy()).all() and \
        (logged.loc[ids, "title"].astype(str).to_numpy() == rows["title"].astype(str).to_numpy()).all()
    positions = pd.Index(recommender.index.catalog["item_id"]).get_indexer(ids)
    if not same or (positions < 0).any():
        return None
    answer = {"accepted": ids, "index_ids": positions.tolist(), "quarantined": [], "rejected": False,
              "since_training": since_training(params, batches)}
    return _replayed(answer, rows, answer["since_training"])


def _records(rows: pd.DataFrame) -> list[str]:
    return rows[FIELDS].astype("string").fillna("").agg(" | ".join, axis=1).tolist() if len(rows) else []

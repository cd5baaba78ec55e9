"""Serving: build the item index from a trained (or untuned) model, add new items, answer queries.

A query is a user's recent history (a known user's events, or free-text titles); the model of
`index.model` turns it into a user vector exactly as in evaluation (towers.py), which is searched in the
item index. New items need only their title: they are embedded with the current model and added to the
index, so they can be recommended before any retraining.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Params
from ..data.layout import DataLayout
from ..data.stage import repair_swap, run_folder_lock
from ..evaluate.trained import lm_encoder
from .catalog_encoding import catalog_key, encode_catalog, process_state
from .index import ItemIndex
from .item_store import Batch, append_batch, batch_digest, log_items, read_log, writer
from .towers import LMTower, seqhead_tower, weights_path


def index_dir(params: Params) -> Path:
    """Where the index of `index.model` lives: `<train.run_dir>/index` (or `<seqhead.run_dir>/index`)."""
    return weights_path(params).parent / "index"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_index(params: Params, zero_shot: bool = False, log=print) -> ItemIndex | None:
    """Embed every prepared item with the model of `index.model` (for llmrec: the run's tuned LM, or the
    untuned one with `zero_shot`) and index them, with the accepted new items. Under `accelerate launch`,
    every process encodes its shards of the LM's catalogue and the main process builds and saves the index
    (the others return None). One index build per run folder at a time."""
    with run_folder_lock(weights_path(params).parent, "llmrec index"):
        return _build_index(params, zero_shot, log)


def _build_index(params: Params, zero_shot: bool, log) -> ItemIndex | None:
    items = pd.read_parquet(DataLayout(params.data_root).prepared / "items.parquet")
    weights = weights_path(params)
    if params.index.model == "seqhead" and zero_shot:
        raise ValueError("--zero-shot indexes the untuned LM; it does not apply to index.model=seqhead")
    if not zero_shot and not weights.is_file():
        hint = "llmrec train --model seqhead" if params.index.model == "seqhead" else "llmrec train"
        raise FileNotFoundError(f"{weights}: no trained weights; run `{hint}` first"
                                + ("" if params.index.model == "seqhead" else " or pass --zero-shot"))
    weights_sha = None if zero_shot else _sha256(weights)
    encoding = index_dir(params).with_name(index_dir(params).name + ".encoding")  # the LM's shards
    started = time.perf_counter()
    if params.index.model == "seqhead":
        tower = seqhead_tower(params, len(items), items)
        vectors = tower.table
    else:
        bundle = lm_encoder(params, items, tuned=not zero_shot)
        model_key = json.dumps([params.model.model_dump(mode="json"), weights_sha], sort_keys=True)
        vectors = encode_catalog(bundle, len(items), params.eval.batch_size, encoding, catalog_key(items, model_key),
                                 params.index.encode_shard_items, log)
        if vectors is None:  # not the main process: its shards are on disk
            return None
        tower = LMTower(params, bundle)
    encode_s = time.perf_counter() - started
    catalog = items.assign(added="prepared")
    meta = {"model_kind": params.index.model, "model": params.model.name_or_path, "tuned": not zero_shot,
            "weights_sha256": weights_sha, "pretrained_mix": params.model.pretrained_mix,
            "built_at": time.strftime("%Y-%m-%d %H:%M:%S"), "build_id": uuid.uuid4().hex, "log_position": 0,
            "encode_seconds": round(encode_s, 3), "items_encoded_per_s": round(len(items) / max(encode_s, 1e-9), 1),
            "encode_processes": process_state().num_processes}
    index = ItemIndex.build(vectors, catalog, meta, params.index)
    with writer(params):  # the items accepted up to now are in it, and none is accepted while it is saved
        replay_log(params, index, tower)
        save_index(params, index, new_build=True)
    shutil.rmtree(encoding, ignore_errors=True)  # the index holds the vectors now
    return index


def replay_log(params: Params, index: ItemIndex, tower) -> None:
    """Add the new items of the log after the index's `log_position` that it lacks (accepted since it was built
    or saved, by any process), and move its position to the log's end. Call under `writer`."""
    batches = [b for b in read_log(params) if b.position > index.meta.get("log_position", 0)]
    if not batches:
        return
    new = log_items(batches)
    new = new[~new["item_id"].isin(set(index.catalog["item_id"]))].drop_duplicates("item_id").reset_index(drop=True)
    if len(new):
        vectors = tower.item_vectors(new)
        index.add(vectors, new)
        tower.extend(vectors)
    index.meta["log_position"] = batches[-1].position


def save_index(params: Params, index: ItemIndex, new_build: bool = False) -> bool:
    """Save `index` unless the saved one is as new: a new build always replaces it; otherwise only a save of the
    same build with a later log position does (an index of an older build never replaces a newer one; the log
    carries its items to the newer). Call under `writer`; returns whether it saved."""
    directory = index_dir(params)
    repair_swap(directory)
    saved = ItemIndex.saved_meta(directory)
    if not new_build and (saved is None or saved.get("build_id") != index.meta.get("build_id")
                          or saved.get("log_position", 0) >= index.meta.get("log_position", 0)):
        return False
    index.save(directory)
    return True


def load_index(params: Params) -> ItemIndex:
    """The saved index of `index.model` as saved (the log's later items not yet added: `replay_log`); refuses one
    built from other weights than the run's current ones."""
    with writer(params):  # never a folder between the two renames of a save; finish one a crash cut short
        repair_swap(index_dir(params))
        index = ItemIndex.load(index_dir(params))
    kind = index.meta.get("model_kind", "llmrec")
    if kind != params.index.model:
        raise ValueError(f"{index_dir(params)} holds a {kind} index, not {params.index.model}: rebuild it with "
                         f"`llmrec index`")
    if index.meta["tuned"]:
        weights = weights_path(params)
        if not weights.is_file() or _sha256(weights) != index.meta["weights_sha256"]:
            raise ValueError(f"{index_dir(params)} was built from other weights than {weights}: "
                             "rebuild it with `llmrec index`")
        mix = index.meta.get("pretrained_mix", 0.0)
        if mix != params.model.pretrained_mix:  # users would be encoded by another LM than the items were
            raise ValueError(f"{index_dir(params)} was built with model.pretrained_mix {mix}, not "
                             f"{params.model.pretrained_mix}: rebuild it with `llmrec index`")
    return index


def load_tower(params: Params, index: ItemIndex):
    """The model that answers queries against `index`."""
    if params.index.model == "seqhead":
        return seqhead_tower(params, int((index.catalog["added"] == "prepared").sum()), index.catalog, index.vectors())
    return LMTower(params, lm_encoder(params, index.catalog.iloc[:1], tuned=index.meta["tuned"]))


def add_items(params: Params, new_items: pd.DataFrame) -> np.ndarray:
    """Embed new items (item_id, domain, title), already screened, with the index's encoder: logged, indexed and
    saved as `POST /items` does; returns their ids."""
    with writer(params):
        return Recommender.load(params).add(new_items)  # fails early (no index, stale index) even for no item


def user_events(params: Params, user_id: str) -> np.ndarray:
    """Every item a known user rated (catalog ids), oldest first, from the prepared events."""
    prepared = DataLayout(params.data_root).prepared
    users = pd.read_parquet(prepared / "users.parquet")
    match = users.loc[users["user_id"] == str(user_id), "user_idx"]
    if match.empty:
        raise KeyError(f"unknown user {user_id!r} (not in {prepared / 'users.parquet'})")
    events = pd.read_parquet(prepared / "events.parquet", filters=[("user_idx", "==", int(match.iloc[0]))])
    events = events.sort_values("timestamp", kind="stable")
    return events["item_idx"].to_numpy(dtype=np.int64)


class Recommender:
    """The encoder and the item index loaded once, for many queries (the CLI makes one per command; the HTTP
    service keeps one and swaps in a fresh one after a retrain). Known users' histories come from
    `user_events`; searching and adding items are serialised by a lock, encoding runs in parallel."""

    def __init__(self, params: Params, index: ItemIndex, tower):
        self.params, self.index, self.tower = params, index, tower
        self.loaded_at = time.strftime("%Y-%m-%d %H:%M:%S")
        self._lock = threading.RLock()
        self._refresh_lookup()

    @classmethod
    def load(cls, params: Params) -> "Recommender":
        """The saved index and its model, with every new item the log holds (the model loads outside the lock)."""
        index = load_index(params)
        recommender = cls(params, index, load_tower(params, index))
        with writer(params):
            recommender.catch_up()
        return recommender

    def catch_up(self) -> None:
        """Add the items accepted since this index was built or saved (by any process). Call under `writer`."""
        with self._lock:
            before = len(self.index.catalog)
            replay_log(self.params, self.index, self.tower)
            if len(self.index.catalog) != before:
                self._refresh_lookup()

    def next_ids(self, n: int) -> np.ndarray:
        """The ids the next `n` added items will get (stable while the caller holds `writer`)."""
        return np.arange(len(self.index.catalog), len(self.index.catalog) + n, dtype=np.int64)

    def add(self, rows: pd.DataFrame) -> np.ndarray:
        """Embed new items (item_id, domain, title; not yet indexed), log them, add them to the index in memory
        and on disk; returns their ids."""
        if rows.empty:
            return np.zeros(0, dtype=np.int64)
        with writer(self.params):
            self.catch_up()
            ids = self.next_ids(len(rows))
            self.persist_and_add(rows, None, batch_digest(rows),
                                 {"accepted": rows["item_id"].tolist(), "index_ids": ids.tolist()})
        return ids

    def persist_and_add(self, rows: pd.DataFrame, key: str | None, digest: str, answer: dict) -> Batch:
        """Embed screened new items, append them to the log (fsync'd: from here they survive any crash), add them
        to the index in memory and save it. Call under `writer`, after `catch_up`; returns the log batch."""
        rows = rows.reset_index(drop=True)
        vectors = self.tower.item_vectors(rows)  # before the log: a failure here has written nothing
        batch = append_batch(self.params, rows, key, digest, answer)
        added = log_items([batch])
        with self._lock:
            ids = self.index.add(vectors, added)
            self.tower.extend(vectors)
            self.index.meta["log_position"] = batch.position
            self._refresh_lookup()
        if answer.get("index_ids") is not None and ids.tolist() != answer["index_ids"]:
            raise RuntimeError(f"index ids {ids.tolist()} differ from those announced {answer['index_ids']}")
        save_index(self.params, self.index)
        return batch

    def _refresh_lookup(self) -> None:
        catalog = self.index.catalog
        lookup = pd.Series(np.arange(len(catalog)), index=catalog["title"].str.casefold())
        self._by_title = lookup[~lookup.index.duplicated()]
        self.domains = sorted(catalog["domain"].unique())

    def recommend(self, user: str | None = None, history: list[str] | None = None, k: int = 10,
                  domain: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Top-k items for a known user or a list of titles; returns (history rows: title, domain, in_catalog;
        recommendations). Titles match the catalogue's case-insensitively; the items matched are excluded."""
        if (user is None) == (history is None):
            raise ValueError("give exactly one of a user id or a history of titles")
        catalog = self.index.catalog
        if user is not None:  # the model reads the recent window; everything the user rated is excluded
            seen = user_events(self.params, user)
            window = seen[-self.tower.window:]
            hist = catalog.iloc[window][["title", "domain"]].reset_index(drop=True).assign(row=window, in_catalog=True)
        else:
            titles = [t.strip() for t in history if t.strip()]
            if not titles:
                raise ValueError("the history has no titles")
            known = self._by_title.reindex([t.casefold() for t in titles])
            seen = known.dropna().to_numpy(dtype=np.int64)
            rows = known.fillna(-1).to_numpy(dtype=np.int64)
            domains = catalog["domain"].to_numpy()[np.maximum(rows, 0)]
            # a title not in the catalogue is read as text only, and nothing can be excluded for it
            hist = pd.DataFrame({"title": titles, "domain": np.where(rows >= 0, domains, ""), "row": rows,
                                 "in_catalog": rows >= 0})
        allowed = None
        if domain is not None:
            allowed = np.flatnonzero(catalog["domain"].to_numpy() == domain)
            if not len(allowed):
                raise ValueError(f"unknown domain {domain!r}; domains: {', '.join(self.domains)}")
        vector = self.tower.user_vector(hist)
        with self._lock:
            offset = self.tower.new_item_offset(self.params.index, vector, hist)
            ids, scores = self._search(vector, k + len(seen), allowed, offset)
            catalog = self.index.catalog
        keep = (ids >= 0) & ~np.isin(ids, seen)  # -1 pads when fewer items than asked
        ids, scores = ids[keep][:k], scores[keep][:k]
        recs = catalog.iloc[ids][["item_id", "domain", "title", "added"]].reset_index(drop=True)
        recs.insert(0, "rank", np.arange(1, len(recs) + 1))
        recs["score"] = scores.round(4)
        return hist[["title", "domain", "in_catalog"]], recs

    def _search(self, vector: np.ndarray, n: int, allowed: np.ndarray | None, offset: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
        """The n best (ids, scores) for one user vector, with `offset` (the tower's `new_item_offset`) added to the
        score of every item the model has no ID embedding for. The lifted top n is the best of the plain top n (the
        warm items in it are among those) and the top n of the unknown items alone, so two searches give it
        exactly."""
        ids, scores = self.index.search(vector, n, allowed)
        ids, scores = ids[0], scores[0]
        unknown = self.tower.unknown
        if not offset or unknown is None or not unknown.any():
            return ids, scores
        new_rows = np.flatnonzero(unknown)
        if allowed is not None:
            new_rows = np.intersect1d(new_rows, allowed)
        if len(new_rows):
            new_ids, new_scores = self.index.search(vector, n, new_rows)
            ids, scores = np.concatenate([ids, new_ids[0]]), np.concatenate([scores, new_scores[0]])
        found = ids >= 0
        ids, first = np.unique(ids[found], return_index=True)
        scores = scores[found][first] + offset * unknown[ids]
        order = np.argsort(-scores, kind="stable")[:n]
        return ids[order], scores[order]


def recommend(params: Params, user: str | None = None, history: list[str] | None = None, k: int = 10,
              domain: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-k items for a known user or a list of titles; returns (history rows, recommendations)."""
    if (user is None) == (history is None):
        raise ValueError("give exactly one of a user id or a history of titles")
    return Recommender.load(params).recommend(user, history, k, domain)

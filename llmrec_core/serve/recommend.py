"""Serving: build the item index from a trained (or untuned) model, add new items, answer queries.

A query is a user's recent history (a known user's events, or free-text titles); the model of
`index.model` turns it into a user vector exactly as in evaluation (towers.py), which is searched in the
item index. New items need only their title: they are embedded with the current model and added to the
index, so they can be recommended before any retraining.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import Params
from ..provenance import file_sha256
from ..data.layout import DataLayout
from ..data.stage import repair_swap, run_folder_lock
from ..evaluate.trained import lm_encoder
from .batcher import MicroBatcher
from .catalog_encoding import catalog_key, encode_catalog, process_state
from .index import ItemIndex
from .item_store import Batch, append_batch, batch_digest, log_items, read_log, writer
from .known_users import KnownUsers, UserVectors
from .towers import LMTower, seqhead_tower, weights_path


def index_dir(params: Params) -> Path:
    """Where the index of `index.model` lives: `<train.run_dir>/index` (or `<seqhead.run_dir>/index`)."""
    return weights_path(params).parent / "index"


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
    weights_sha = None if zero_shot else file_sha256(weights)
    encoding = index_dir(params).with_name(index_dir(params).name + ".encoding")  # the LM's shards
    started = time.perf_counter()
    if params.index.model == "seqhead":
        tower = seqhead_tower(params, len(items), items)
        vectors = tower.table
    else:
        bundle = lm_encoder(params, items, tuned=not zero_shot)
        model_key = json.dumps([params.model.model_dump(mode="json"), weights_sha], sort_keys=True)
        key = catalog_key(items, model_key)
        if params.index.encode_engine == "ray":
            from .ray_encoding import encode_catalog_ray

            prepared = DataLayout(params.data_root).prepared / "items.parquet"
            vectors = encode_catalog_ray(params, prepared, not zero_shot, len(items), encoding, key, log)
        else:
            vectors = encode_catalog(bundle, len(items), params.eval.batch_size, encoding, key,
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
            "encode_engine": params.index.encode_engine,
            "encode_processes": (params.index.encode_actors if params.index.encode_engine == "ray"
                                 else process_state().num_processes)}
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
        if not weights.is_file() or file_sha256(weights) != index.meta["weights_sha256"]:
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
    service keeps one and swaps in a fresh one after a retrain). Known users' histories are read once
    (`KnownUsers`) and their vectors kept (`UserVectors`); the queries that arrive together are searched as one
    batch (`MicroBatcher`); searching and adding items are serialised by a lock, encoding runs in parallel."""

    def __init__(self, params: Params, index: ItemIndex, tower):
        self.params, self.index, self.tower = params, index, tower
        self.loaded_at = time.strftime("%Y-%m-%d %H:%M:%S")
        self._lock = threading.RLock()
        self._known_users = KnownUsers.of(params)
        self._user_vectors = UserVectors()  # this recommender's: a reload starts with none
        self._batcher = MicroBatcher(self._answer, name="llmrec-search")
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
        """What queries read of the catalogue, rebuilt whenever items are added (under `_lock`): titles to rows,
        each domain's rows, the rows the tower has no ID embedding for, and the columns of the answers."""
        catalog = self.index.catalog
        lookup = pd.Series(np.arange(len(catalog)), index=catalog["title"].str.casefold())
        self._by_title = lookup[~lookup.index.duplicated()]
        domain = catalog["domain"].to_numpy(dtype=object)
        self.domains = sorted(set(domain))
        self._domain_rows = {d: np.flatnonzero(domain == d) for d in self.domains}
        unknown = self.tower.unknown
        self._new_rows = {None: None if unknown is None else np.flatnonzero(unknown)}
        self._outside_rows = {}
        self._columns = {c: catalog[c].to_numpy(dtype=object) for c in ("item_id", "domain", "title", "added")}

    def recommend(self, user: str | None = None, history: list[str] | None = None, k: int = 10,
                  domain: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Top-k items for a known user or a list of titles; returns (history rows: title, domain, in_catalog;
        recommendations). Titles match the catalogue's case-insensitively; the items matched are excluded."""
        hist, recs = self.recommend_records(user, history, k, domain)
        return (pd.DataFrame(hist, columns=["title", "domain", "in_catalog"]),
                pd.DataFrame(recs, columns=["rank", "item_id", "domain", "title", "added", "score"]))

    def recommend_records(self, user: str | None = None, history: list[str] | None = None, k: int = 10,
                          domain: str | None = None) -> tuple[list[dict], list[dict]]:
        """`recommend` as lists of records (what POST /recommend answers), without building data frames. Queries
        that arrive together are searched as one batch (`MicroBatcher`), which answers each as it would alone."""
        if (user is None) == (history is None):
            raise ValueError("give exactly one of a user id or a history of titles")
        if domain is not None and domain not in self._domain_rows:
            raise ValueError(f"unknown domain {domain!r}; domains: {', '.join(self.domains)}")
        records, rows, seen, vector = self._known_history(user) if user is not None else self._titles_history(history)
        ids, scores, columns = self._batcher.submit(_Query(vector, rows, seen, k, domain))
        recs = [{"rank": rank, "item_id": columns["item_id"][i], "domain": columns["domain"][i],
                 "title": columns["title"][i], "added": columns["added"][i], "score": score}
                for rank, (i, score) in enumerate(zip(ids.tolist(), scores.round(4).tolist()), start=1)]
        return records, recs

    def _known_history(self, user: str) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
        """A known user's (history records, window rows, every rated row, user vector): the model reads the recent
        window, everything the user rated is excluded. The vector comes from the cache when it holds this history."""
        seen = self._known_users.events(user)
        window = seen[-self.tower.window:]
        columns = self._columns  # prepared items keep their rows: any snapshot of the columns holds the window
        titles, domains = columns["title"][window], columns["domain"][window]
        vector = self._user_vectors.get(user, window)
        if vector is None:
            hist = pd.DataFrame({"title": titles, "domain": domains, "row": window})
            vector = self.tower.user_vector(hist)
            self._user_vectors.put(user, window, vector)
        records = [{"title": t, "domain": d, "in_catalog": True} for t, d in zip(titles.tolist(), domains.tolist())]
        return records, window, seen, vector

    def _titles_history(self, history: list[str]) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
        """(history records, rows, rows to exclude, user vector) for free-text titles: titles match the catalogue's
        case-insensitively; a title not in it is read as text only (row -1), and nothing is excluded for it."""
        titles = [t.strip() for t in history if t.strip()]
        if not titles:
            raise ValueError("the history has no titles")
        known = self._by_title.reindex([t.casefold() for t in titles])
        seen = known.dropna().to_numpy(dtype=np.int64)
        rows = known.fillna(-1).to_numpy(dtype=np.int64)
        domains = np.where(rows >= 0, self._columns["domain"][np.maximum(rows, 0)], "")
        hist = pd.DataFrame({"title": titles, "domain": domains, "row": rows, "in_catalog": rows >= 0})
        vector = self.tower.user_vector(hist)
        records = hist[["title", "domain", "in_catalog"]].to_dict("records")
        return records, rows, seen, vector

    def _answer(self, queries: list["_Query"]) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        """(ids, scores, catalogue columns) of the top k of each query, its history excluded: the batch's searches
        and the columns read under one hold of the lock, so an item added meanwhile is in all or none of them."""
        vectors = np.concatenate([np.asarray(q.vector, dtype=np.float32).reshape(1, -1) for q in queries])
        with self._lock:
            exact = self.index.exact_vectors()
            if exact is not None:
                found = self._exact_batch(exact, vectors, queries)
            else:
                offsets = self.tower.new_item_offsets(self.params.index, vectors, [q.rows for q in queries])
                found = self._search_batch(vectors, [q.k + len(q.seen) for q in queries],
                                           [q.domain for q in queries], offsets)
                found = [(ids[(ids >= 0) & ~np.isin(ids, q.seen)][:q.k],  # -1 pads when fewer items than asked
                          scores[(ids >= 0) & ~np.isin(ids, q.seen)][:q.k]) for q, (ids, scores) in zip(queries, found)]
            columns = self._columns
        return [(ids, scores, columns) for ids, scores in found]

    def _exact_batch(self, items: np.ndarray, vectors: np.ndarray, queries: list["_Query"]
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The top k (ids, scores) of each query over every item vector (`items`, the exact index's): one product of
        all the batch's user vectors with the items; each user's offset (the tower's `new_item_offset`, calibrated
        on these scores) added to the score of every item the model has no ID embedding for; the items the user
        rated and those outside the query's domain ruled out; then each row's top k."""
        # items x users: the orientation BLAS multiplies fastest for a few users (one pass over the items)
        scores = torch.from_numpy(items) @ torch.from_numpy(vectors).T
        unknown = self.tower.unknown
        if unknown is not None and unknown.any():
            offsets = self.tower.new_item_offsets(self.params.index, vectors, [q.rows for q in queries],
                                                  item_scores=scores.numpy().T)
            if np.any(offsets):
                scores.addr_(torch.from_numpy(unknown.astype(np.float32)),
                             torch.from_numpy(np.asarray(offsets, dtype=np.float32)))
        for i, q in enumerate(queries):
            scores[torch.from_numpy(q.seen), i] = -torch.inf
            if q.domain is not None:
                scores[self._outside(q.domain), i] = -torch.inf
        best_scores, best_ids = (t.T.numpy() for t in torch.topk(scores, min(max(q.k for q in queries), len(items)),
                                                                 dim=0, sorted=True))
        found = []
        for i, q in enumerate(queries):
            ruled_in = np.isfinite(best_scores[i, :q.k])  # fewer items than asked: the rest were ruled out
            found.append((best_ids[i, :q.k][ruled_in], best_scores[i, :q.k][ruled_in]))
        return found

    def _outside(self, domain: str) -> torch.Tensor:
        """The rows outside `domain` (a bool per item), made once per catalogue."""
        if domain not in self._outside_rows:
            outside = np.ones(len(self.index.catalog), dtype=bool)
            outside[self._domain_rows[domain]] = False
            self._outside_rows[domain] = torch.from_numpy(outside)
        return self._outside_rows[domain]

    def _search_batch(self, vectors: np.ndarray, ns: list[int], domains: list[str | None],
                      offsets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The n best (ids, scores) for each user vector in `domain` (None: all), with its offset (the tower's
        `new_item_offset`) added to the score of every item the model has no ID embedding for (`_lift`). Each is
        answered as it would be alone: the queries of one domain are searched together for the most any of them
        asks, and each keeps the top it asked for (a top n of the exact index is the start of its top n + m). HNSW
        explores more candidates for a larger n, so there a query that asks for more than `hnsw_ef_search` is
        searched with the queries that ask for as many."""
        hnsw = self.index.meta.get("kind", "exact") == "hnsw"
        ef = self.index.meta.get("hnsw", {}).get("ef_search", 0)
        groups: dict[tuple, list[int]] = {}
        for i, (n, domain) in enumerate(zip(ns, domains)):
            groups.setdefault((domain, n if hnsw and n > ef else 0), []).append(i)
        results: list = [None] * len(vectors)
        for (domain, _), members in groups.items():
            allowed = None if domain is None else self._domain_rows[domain]
            users = vectors[members]
            n = max(ns[i] for i in members)
            ids, scores = self.index.search(users, n, allowed)
            lifted = [j for j, i in enumerate(members) if offsets[i]]
            new_rows = self._unknown_rows(domain) if lifted else None
            new_found = {}  # row of `users` -> the top n of the unknown items alone
            if new_rows is not None and len(new_rows):
                new_ids, new_scores = self.index.search(users[lifted], n, new_rows)
                new_found = {j: (new_ids[r], new_scores[r]) for r, j in enumerate(lifted)}
            for j, i in enumerate(members):
                plain = ids[j, :ns[i]], scores[j, :ns[i]]
                if not offsets[i] or new_rows is None:
                    results[i] = plain
                    continue
                new_ids, new_scores = new_found.get(j, (None, None))
                if new_ids is not None:
                    new_ids, new_scores = new_ids[:ns[i]], new_scores[:ns[i]]
                results[i] = self._lift(*plain, new_ids, new_scores, offsets[i], ns[i])
        return results

    def _unknown_rows(self, domain: str | None) -> np.ndarray | None:
        """The rows the tower has no ID embedding for (in `domain`), None when it has none."""
        if domain not in self._new_rows:
            every = self._new_rows[None]
            self._new_rows[domain] = None if every is None else np.intersect1d(every, self._domain_rows[domain])
        return self._new_rows[domain]

    def _lift(self, ids: np.ndarray, scores: np.ndarray, new_ids: np.ndarray | None, new_scores: np.ndarray | None,
              offset: float, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n best with `offset` added to the score of every item the model has no ID embedding for. The lifted
        top n is the best of the plain top n (the warm items in it are among those) and the top n of the unknown
        items alone, so two searches give it exactly."""
        if new_ids is not None:
            ids, scores = np.concatenate([ids, new_ids]), np.concatenate([scores, new_scores])
        found = ids >= 0
        ids, first = np.unique(ids[found], return_index=True)
        scores = scores[found][first] + offset * self.tower.unknown[ids]
        order = np.argsort(-scores, kind="stable")[:n]
        return ids[order], scores[order]


@dataclass(frozen=True)
class _Query:
    """One query for the batch: the user vector [1, dim], its history rows (-1: a title outside the catalogue),
    the rows to exclude, how many items and from which domain."""

    vector: np.ndarray
    rows: np.ndarray
    seen: np.ndarray
    k: int
    domain: str | None


def recommend(params: Params, user: str | None = None, history: list[str] | None = None, k: int = 10,
              domain: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-k items for a known user or a list of titles; returns (history rows, recommendations)."""
    if (user is None) == (history is None):
        raise ValueError("give exactly one of a user id or a history of titles")
    return Recommender.load(params).recommend(user, history, k, domain)

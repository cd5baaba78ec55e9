"""A faiss index of item vectors plus its catalog, for serving top-K queries.

Scores are inner products, as in evaluation (LLM-Rec's vectors are L2-normalised, so for it that is cosine
similarity). Up to `index.exact_max_items` items the index is exact (`IndexFlatIP`: the same ranking as
evaluation); above, it is HNSW (`IndexHNSWFlat`, inner
product), whose query time grows with log(items) instead of items (`index.kind` overrides the rule). Both take
new items without a rebuild. Ids are catalog rows: the prepared items keep their `item_idx`, and items added
later (new arrivals, embedded zero-shot) are appended after them.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from ..config import IndexConfig
from ..data.stage import swap_in, temporary_beside

CATALOG_COLUMNS = ["item_id", "domain", "title", "added"]
# A filter multiplies HNSW's candidate list by 1/selectivity, at most this much: past it, recall gains little and
# latency grows (make bench-model, section ann: recall@10 against exact search with one domain of 10 allowed).
MAX_FILTER_WIDENING = 4


def index_kind(n_items: int, cfg: IndexConfig) -> str:
    """`cfg.kind`, or for "auto": exact up to `cfg.exact_max_items` items, HNSW above."""
    if cfg.kind != "auto":
        return cfg.kind
    return "exact" if n_items <= cfg.exact_max_items else "hnsw"


def _empty_index(kind: str, dim: int, cfg: IndexConfig) -> faiss.IndexIDMap2:
    if kind == "exact":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    inner = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = cfg.hnsw_ef_construction
    inner.hnsw.efSearch = cfg.hnsw_ef_search
    return faiss.IndexIDMap2(inner)


@dataclass
class ItemIndex:
    """A faiss index of item vectors (exact or HNSW) with each vector's item id and domain."""

    index: faiss.IndexIDMap2
    catalog: pd.DataFrame  # one row per vector, row number = faiss id; columns CATALOG_COLUMNS
    meta: dict

    @classmethod
    def build(cls, vectors: np.ndarray, catalog: pd.DataFrame, meta: dict,
              cfg: IndexConfig | None = None) -> "ItemIndex":
        """Index `vectors` (row r is catalog row r), exact or HNSW by `cfg` (default: the rule's default)."""
        if len(vectors) != len(catalog):
            raise ValueError(f"{len(vectors)} vectors for {len(catalog)} catalog rows")
        cfg = cfg or IndexConfig()
        kind = index_kind(len(vectors), cfg)
        started = time.perf_counter()
        index = _empty_index(kind, vectors.shape[1], cfg)
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(len(vectors), dtype=np.int64))
        meta = {**meta, "dim": int(vectors.shape[1]), "items": len(vectors), "kind": kind,
                "build_seconds": round(time.perf_counter() - started, 4)}
        if kind == "hnsw":
            meta["hnsw"] = {"m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction,
                            "ef_search": cfg.hnsw_ef_search}
        return cls(index, catalog[CATALOG_COLUMNS].reset_index(drop=True), meta)

    def add(self, vectors: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
        """Append new items; ids already in the catalog are rejected (their vectors would be ambiguous)."""
        known = set(self.catalog["item_id"])
        clash = [i for i in rows["item_id"] if i in known]
        if clash:
            raise ValueError(f"{len(clash)} item ids already indexed, e.g. {clash[:3]}")
        ids = np.arange(len(self.catalog), len(self.catalog) + len(rows), dtype=np.int64)
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self.catalog = pd.concat([self.catalog, rows[CATALOG_COLUMNS]], ignore_index=True)
        self.meta["items"] = len(self.catalog)
        return ids

    def search(self, users: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids and scores per user; `allowed` restricts the candidates (e.g. one domain)."""
        k = max(1, min(k, self.index.ntotal if allowed is None else len(allowed)))
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        if self.meta.get("kind", "exact") == "hnsw":
            # HNSW keeps `ef` candidates; a filter drops most of them, so look at more in proportion
            widening = 1 if allowed is None else min(MAX_FILTER_WIDENING, -(-self.index.ntotal // max(len(allowed), 1)))
            params = faiss.SearchParametersHNSW(efSearch=max(self.meta["hnsw"]["ef_search"], k) * widening)
            if selector is not None:
                params.sel = selector
        else:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
        scores, ids = self.index.search(np.ascontiguousarray(users, dtype=np.float32), k, params=params)
        return ids, scores

    def exact_vectors(self) -> np.ndarray | None:
        """The exact index's vectors in id order, read in place (no copy; valid until items are added), or None
        for HNSW."""
        if self.meta.get("kind", "exact") != "exact":
            return None
        flat = faiss.downcast_index(self.index.index)
        return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)

    def vectors(self) -> np.ndarray:
        """Every indexed vector, in id (catalog row) order."""
        return faiss.downcast_index(self.index.index).reconstruct_n(0, self.index.ntotal)

    def save(self, directory: Path) -> None:
        """Write to a fresh temporary folder, fsync it, and swap it in, so a reader never sees half an index and a
        crash leaves the old one or the new one (`repair_swap` puts back one cut short between its renames)."""
        directory = Path(directory)
        tmp = temporary_beside(directory)
        tmp.mkdir(parents=True)
        try:
            faiss.write_index(self.index, str(tmp / "items.faiss"))
            self.catalog.to_parquet(tmp / "catalog.parquet", index=False)
            (tmp / "index.json").write_text(json.dumps(self.meta, indent=2))
            for path in [*tmp.iterdir(), tmp]:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        swap_in(tmp, directory)
        fd = os.open(directory.parent, os.O_RDONLY)  # the renames themselves survive a power cut
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, directory: Path) -> "ItemIndex":
        directory = Path(directory)
        if not (directory / "items.faiss").is_file():
            raise FileNotFoundError(f"{directory}: no item index; run `llmrec index` first")
        index = faiss.read_index(str(directory / "items.faiss"))
        catalog = pd.read_parquet(directory / "catalog.parquet")
        meta = json.loads((directory / "index.json").read_text())
        return cls(index, catalog, meta)

    @staticmethod
    def saved_meta(directory: Path) -> dict | None:
        """The meta of the index saved in `directory`, or None when there is none."""
        path = Path(directory) / "index.json"
        return json.loads(path.read_text()) if path.is_file() else None

"""A faiss index of item vectors plus its catalog, for serving top-K queries.

Vectors are L2-normalised, so inner product is cosine similarity and an exact `IndexFlatIP` gives
the same ranking as evaluation. Ids are catalog rows: the prepared items keep their `item_idx`, and
items added later (new arrivals, embedded zero-shot) are appended after them.
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

CATALOG_COLUMNS = ["item_id", "domain", "title", "added"]


@dataclass
class ItemIndex:
    index: faiss.IndexIDMap2
    catalog: pd.DataFrame  # one row per vector, row number = faiss id; columns CATALOG_COLUMNS
    meta: dict

    @classmethod
    def build(cls, vectors: np.ndarray, catalog: pd.DataFrame, meta: dict) -> "ItemIndex":
        if len(vectors) != len(catalog):
            raise ValueError(f"{len(vectors)} vectors for {len(catalog)} catalog rows")
        started = time.perf_counter()
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(len(vectors), dtype=np.int64))
        meta = {**meta, "dim": int(vectors.shape[1]), "items": len(vectors),
                "build_seconds": round(time.perf_counter() - started, 4)}
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
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64)))
        k = min(k, self.index.ntotal if allowed is None else len(allowed))
        scores, ids = self.index.search(np.ascontiguousarray(users, dtype=np.float32), k, params=params)
        return ids, scores

    def save(self, directory: Path) -> None:
        """Write to a temporary folder and swap it in, so a reader never sees half an index."""
        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(tmp / "items.faiss"))
        self.catalog.to_parquet(tmp / "catalog.parquet", index=False)
        (tmp / "index.json").write_text(json.dumps(self.meta, indent=2))
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, directory: Path) -> "ItemIndex":
        directory = Path(directory)
        if not (directory / "items.faiss").is_file():
            raise FileNotFoundError(f"{directory}: no item index; run `llmrec index` first")
        index = faiss.read_index(str(directory / "items.faiss"))
        catalog = pd.read_parquet(directory / "catalog.parquet")
        meta = json.loads((directory / "index.json").read_text())
        return cls(index, catalog, meta)

"""The new items accepted between trainings, on disk under `<data root>/new_items/`: accepted.parquet (re-added
to the index after a rebuild), quarantine.parquet (file, line, reason) and state.json (items since the last
training, the files read). Written by `ingest-new-items` and `POST /items`, read by the index and retraining."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from ..config import Params
from ..data.contract import QUARANTINE

FIELDS = ["item_id", "domain", "title"]


def new_items_dir(params: Params) -> Path:
    """`<data root>/new_items`: the accepted and quarantined new items and their state."""
    return params.data_root / "new_items"


def record_new_items(params: Params, accepted: pd.DataFrame, quarantined: pd.DataFrame, source: str | Path) -> int:
    """Persist a batch's outcome (accepted.parquet, quarantine.parquet, state.json); returns the accepted items
    since the last training."""

    out = new_items_dir(params)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    if len(accepted):
        _append(out / "accepted.parquet", accepted.assign(added=stamp))
    if len(quarantined):
        q = quarantined.assign(stage="new_items", table="items")[QUARANTINE.names]
        _append(out / "quarantine.parquet", q)
    state = _state(out)
    state["since_training"] += len(accepted)
    state["files"].append({"file": str(source), "at": stamp, "accepted": len(accepted),
                           "quarantined": len(quarantined)})
    (out / "state.json").write_text(json.dumps(state, indent=2))
    return state["since_training"]


def _state(directory: Path) -> dict:
    path = directory / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"since_training": 0, "files": []}


def reset_since_training(params: Params) -> None:
    """Called after a retraining has consumed the new items."""
    out = new_items_dir(params)
    if (out / "state.json").is_file():
        state = _state(out)
        state["since_training"] = 0
        (out / "state.json").write_text(json.dumps(state, indent=2))


def accepted_items(params: Params) -> pd.DataFrame:
    """Every item accepted since the data was prepared (item_id, domain, title, source_file, source_line, added)."""
    path = new_items_dir(params) / "accepted.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=FIELDS)


def _append(path: Path, frame: pd.DataFrame) -> None:
    if path.is_file():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)

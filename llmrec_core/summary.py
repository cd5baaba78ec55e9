"""Tables built from the metrics files a pipeline run wrote (never typed): for the CLI and Prefect artifacts."""
from __future__ import annotations

import json
from pathlib import Path

from .markdown import table


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def metrics_markdown(run: Path, ks=(10, 50), split: str = "test") -> str:
    """A markdown table of the run's overall metrics on `split`, one row per model."""
    columns = ["model", "targets", *(f"{m}@{k}" for k in ks for m in ("Recall", "NDCG")), "MRR"]
    found = _read(run / f"metrics_{split}.json") or {"models": {}}
    rows = [[model, r["overall"]["count"], *(r["overall"].get(f"{m}@{k}") for k in ks for m in ("recall", "ndcg")),
             r["overall"].get("mrr")] for model, r in found["models"].items()]
    return table(columns, rows)


def cost_markdown(run: Path) -> str:
    """A markdown table of the run's training and evaluation cost."""
    columns = ["phase", "model", "device", "params", "trainable", "samples/s (items/s for eval)", "wall s",
               "peak host MB", "device-h", "money"]
    rows = []
    for name in ("cost_train.json", "sasrec/cost_train.json", "seqhead/cost_train.json"):
        cost = _read(run / name)
        if cost:
            rows.append(["train", cost.get("model", ""), cost["device"], cost["parameters_total"],
                         cost["parameters_trainable"], cost["samples_per_s"], cost["seconds_total"],
                         cost["peak_host_mb"], cost["device_hours"], cost["money_estimate"]])
    for model, cost in (_read(run / "cost_eval.json") or {}).items():
        rows.append(["eval", model, cost["device"], cost["parameters_total"], None, cost.get("items_encoded_per_s"),
                     cost["seconds_total"], cost["peak_host_mb"], cost["device_hours"], cost["money_estimate"]])
    return table(columns, rows)

"""Tables built from the metrics files a pipeline run wrote (never typed): for the CLI, Prefect and reports."""
from __future__ import annotations

import json
from pathlib import Path

from .markdown import table


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def run_dirs(runs_root: Path, names: list[str] | None = None) -> list[Path]:
    """Every run folder under `runs_root` with test metrics (or only those `names` lists)."""
    runs = sorted(p.parent for p in runs_root.glob("*/metrics_test.json"))
    return runs if names is None else [r for r in runs if r.name in names]


def metrics_markdown(runs_root: Path, ks=(10, 50), names: list[str] | None = None) -> str:
    """A markdown table of each run's overall test metrics per model."""
    columns = ["run", "model", "targets", *(f"{m}@{k}" for k in ks for m in ("Recall", "NDCG")), "MRR"]
    rows = []
    for run in run_dirs(runs_root, names):
        for model, result in read_json(run / "metrics_test.json")["models"].items():
            overall = result["overall"]
            rows.append([run.name, model, overall["count"],
                         *(overall.get(f"{m}@{k}") for k in ks for m in ("recall", "ndcg")), overall.get("mrr")])
    return table(columns, rows)


def cost_markdown(runs_root: Path, names: list[str] | None = None) -> str:
    """A markdown table of each run's training and evaluation cost."""
    columns = ["run", "phase", "model", "device", "params", "trainable", "samples/s (items/s for eval)", "wall s",
               "peak host MB", "device-h", "money"]
    rows = []
    for run in run_dirs(runs_root, names):
        for name in ("cost_train.json", "sasrec/cost_train.json", "seqhead/cost_train.json"):
            cost = read_json(run / name)
            if cost:
                rows.append([run.name, "train", cost.get("model", ""), cost["device"], cost["parameters_total"],
                             cost["parameters_trainable"], cost["samples_per_s"], cost["seconds_total"],
                             cost["peak_host_mb"], cost["device_hours"], cost["money_estimate"]])
        for model, cost in (read_json(run / "cost_eval.json") or {}).items():
            rows.append([run.name, "eval", model, cost["device"], cost["parameters_total"], None,
                         cost.get("items_encoded_per_s"), cost["seconds_total"], cost["peak_host_mb"],
                         cost["device_hours"], cost["money_estimate"]])
    return table(columns, rows)

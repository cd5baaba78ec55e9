"""Tables built from the metrics files a pipeline run wrote (never typed): for the CLI, Prefect and reports."""
from __future__ import annotations

import json
from pathlib import Path


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def run_dirs(runs_root: Path, names: list[str] | None = None) -> list[Path]:
    """Every run folder under `runs_root` with test metrics (or only those `names` lists)."""
    runs = sorted(p.parent for p in runs_root.glob("*/metrics_test.json"))
    return runs if names is None else [r for r in runs if r.name in names]


def metrics_markdown(runs_root: Path, ks=(10, 50), names: list[str] | None = None) -> str:
    """A markdown table of each run's overall test metrics per model."""
    rows = ["| run | model | targets | " + " | ".join(f"Recall@{k} | NDCG@{k}" for k in ks) + " | MRR |",
            "| --- | --- | ---: | " + " | ".join("---: | ---:" for _ in ks) + " | ---: |"]
    for run in run_dirs(runs_root, names):
        out = _read(run / "metrics_test.json")
        for model, res in out["models"].items():
            o = res["overall"]
            cells = " | ".join(f"{o.get(f'recall@{k}', float('nan')):.4f} | {o.get(f'ndcg@{k}', float('nan')):.4f}"
                               for k in ks)
            rows.append(f"| {run.name} | {model} | {o['count']} | {cells} | {o.get('mrr', float('nan')):.4f} |")
    return "\n".join(rows)


def cost_markdown(runs_root: Path, names: list[str] | None = None) -> str:
    """A markdown table of each run's training and evaluation cost."""
    rows = ["| run | phase | model | device | params (trainable) | samples/s | wall s | peak host MB | device-h | money |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in run_dirs(runs_root, names):
        for name in ("cost_train.json", "sasrec/cost_train.json"):
            c = _read(run / name)
            if c:
                rows.append(f"| {run.name} | train | {c.get('model', '')} | {c['device']} | "
                            f"{c['parameters_total']:,} ({c['parameters_trainable']:,}) | {c['samples_per_s']} | "
                            f"{c['seconds_total']} | {c['peak_host_mb']} | {c['device_hours']} | {c['money_estimate']} |")
        for model, c in (_read(run / "cost_eval.json") or {}).items():
            rows.append(f"| {run.name} | eval | {model} | {c['device']} | {c['parameters_total']:,} | "
                        f"{c.get('items_encoded_per_s', '')} items/s | {c['seconds_total']} | {c['peak_host_mb']} | "
                        f"{c['device_hours']} | {c['money_estimate']} |")
    return "\n".join(rows)

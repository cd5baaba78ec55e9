"""Read what the analyses wrote: one `Run` per experiment, plus the benchmark files.

Nothing here computes a metric; it only loads the metrics, cost and index records the train,
evaluate and index steps saved, and says which analysis each experiment belongs to from its params.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Params, load_params


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Run:
    name: str
    params: Params
    metrics: dict | None  # metrics_test.json: {"models": {model: {"overall", "by_domain", "by_group", ...}}}
    cost_train: dict | None  # the LM's training record
    cost_sasrec: dict | None
    cost_eval: dict = field(default_factory=dict)  # per model
    index: dict | None = None  # index meta (encode and build times)
    train_metrics: dict | None = None  # the LM's training summary (best validation NDCG@10)
    valid_metrics: dict | None = None  # metrics_valid.json: the whole validation split, evaluated like the test

    @property
    def valid_ndcg(self) -> float | None:
        """The tuned LM's NDCG@10 on the whole validation split (None if that was not evaluated)."""
        return (((self.valid_metrics or {}).get("models", {}).get("llmrec") or {}).get("overall", {})
                .get("ndcg@10"))

    @property
    def setting(self) -> str:
        return self.params.train.setting

    @property
    def domain(self) -> str | None:
        return self.params.train.domain

    @property
    def model_name(self) -> str:
        return Path(self.params.model.name_or_path).name

    @property
    def tuning(self) -> str:
        return self.params.train.tuning

    def result(self, model: str) -> dict | None:
        return (self.metrics or {}).get("models", {}).get(model)

    def has(self, model: str) -> bool:
        return self.result(model) is not None


def load_runs(params_path: Path) -> list[Run]:
    """Every experiment of the params file that has test metrics, in the file's order."""
    base = load_params(params_path)
    runs = []
    for exp in base.experiments:
        p = load_params(params_path, experiment=exp.name)
        run_dir = p.resolve(p.train.run_dir)
        metrics = read_json(run_dir / "metrics_test.json")
        if metrics is None:
            continue
        runs.append(Run(exp.name, p, metrics, read_json(run_dir / "cost_train.json"),
                        read_json(p.resolve(p.sasrec.run_dir) / "cost_train.json"),
                        read_json(run_dir / "cost_eval.json") or {}, read_json(run_dir / "index" / "index.json"),
                        read_json(run_dir / "train_metrics.json"), read_json(run_dir / "metrics_valid.json")))
    return runs


def missing_runs(params_path: Path) -> list[str]:
    done = {r.name for r in load_runs(params_path)}
    return [e.name for e in load_params(params_path).experiments if e.name not in done]


def load_benchmarks(folder: Path) -> dict[str, dict]:
    """reports/benchmarks/<section>_<device>.json files, keyed by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}

"""Read what the analyses wrote: one `Run` per run of an experiment, `Arm`s that pool runs, benchmarks.

A `Run` loads the metrics, per-target ranks, cost and index records the train, evaluate and index
steps saved. An `Arm` is what the report compares: one model of one experiment over its seeds, or
several experiments pooled (Single Domain is one run per domain, each read on its own domain).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from llmrec_core.config import SEED_RUN, Params, load_params
from llmrec_core.data.layout import DataLayout

from ..experiments import read_stamp, run_status
from .stats import Interval, paired_interval, per_target, unpaired_interval

KEYS = ["user_idx", "target"]  # a target; "occurrence" tells apart a user's repeated events on one item


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Run:
    """One finished run as the report reads it: its params, metrics, ranks and cost records."""

    name: str  # the run: the experiment's name, or <experiment>.seed<N>
    params: Params
    metrics: dict | None  # metrics_test.json: {"models": {model: {"overall", "by_domain", "by_group", ...}}}
    cost_train: dict | None  # the LM's training record
    cost_sasrec: dict | None
    cost_eval: dict = field(default_factory=dict)  # per model
    index: dict | None = None  # index meta (encode and build times)
    train_metrics: dict | None = None  # the LM's training summary (best validation NDCG@10)
    valid_metrics: dict | None = None  # metrics_valid.json: the whole validation split, evaluated like the test
    cost_seqhead: dict | None = None  # the sequence head's training record

    def training_cost(self, model: str) -> dict | None:
        """The training record of `model` ("llmrec", "sasrec" or "seqhead"); None for untrained models."""
        return {"llmrec": self.cost_train, "sasrec": self.cost_sasrec, "seqhead": self.cost_seqhead}.get(model)

    @property
    def experiment(self) -> str:
        seeded = SEED_RUN.match(self.name)
        return seeded["experiment"] if seeded else self.name

    @property
    def run_dir(self) -> Path:
        return self.params.resolve(self.params.train.run_dir)

    @cached_property
    def status(self) -> tuple[str, str]:
        """(status, why) of experiments.run_status: whether params, data and code still match the record."""
        return run_status(self.params)

    @property
    def provenance(self) -> dict:
        return (read_stamp(self.params) or {}).get("provenance") or (self.metrics or {}).get("provenance") or {}

    @property
    def commit(self) -> str:
        """Short commit of the code behind the run, `*` when that code was uncommitted."""
        p = self.provenance
        return ((p.get("commit") or "?")[:10] + ("*" if p.get("dirty") else "")) if p else "?"

    @cached_property
    def ranks(self) -> pd.DataFrame | None:
        """ranks_test.parquet: each test target's rank per model (None for runs made before it existed)."""
        path = self.run_dir / "ranks_test.parquet"
        return pd.read_parquet(path) if path.is_file() else None

    def valid_ndcg(self, model: str = "llmrec") -> float | None:
        """A tuned model's NDCG@10 on the whole validation split (None if that was not evaluated)."""
        return (((self.valid_metrics or {}).get("models", {}).get(model) or {}).get("overall", {})
                .get("ndcg@10"))

    @cached_property
    def time_split(self) -> dict | None:
        """The time-split block of the run's prepared data (the new-item setting), None for leave-one-out."""
        return (read_json(DataLayout(self.params.data_root).prepared / "manifest.json") or {}).get("time_split")

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
    """Every run of the params file's experiments that has test metrics, in the file's order."""
    base = load_params(params_path)
    runs = []
    for name in base.run_names():
        p = load_params(params_path, experiment=name)
        run_dir = p.resolve(p.train.run_dir)
        metrics = read_json(run_dir / "metrics_test.json")
        if metrics is None:
            continue
        runs.append(Run(name, p, metrics, read_json(run_dir / "cost_train.json"),
                        read_json(p.resolve(p.sasrec.run_dir) / "cost_train.json"),
                        read_json(run_dir / "cost_eval.json") or {}, read_json(run_dir / "index" / "index.json"),
                        read_json(run_dir / "train_metrics.json"), read_json(run_dir / "metrics_valid.json"),
                        read_json(p.resolve(p.seqhead.run_dir) / "cost_train.json")))
    return runs


def missing_runs(params_path: Path) -> list[str]:
    """The runs of the params file's experiments that have no test metrics yet."""
    done = {r.name for r in load_runs(params_path)}
    return [name for name in load_params(params_path).run_names() if name not in done]


def load_benchmarks(folder: Path) -> dict[str, dict]:
    """reports/benchmarks/<section>_<device>.json files, keyed by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


@dataclass
class Arm:
    """One model as the report compares it: `parts` are (the runs of one experiment, one per seed; the domain
    to read, or None for all), pooled. A target's value is its mean over the part's seeds."""

    label: str
    model: str  # "llmrec", "zero_shot", "seqhead", "sasrec" or "popularity"
    parts: list[tuple[list[Run], str | None]]

    @classmethod
    def of(cls, label: str, model: str, runs: list[Run], domain: str | None = None) -> "Arm":
        return cls(label, model, [(runs, domain)])

    @property
    def runs(self) -> list[Run]:
        return [r for runs, _ in self.parts for r in runs]

    @property
    def seeds(self) -> int:
        return min(len(runs) for runs, _ in self.parts) if self.parts else 0

    def _part_values(self, runs: list[Run], domain: str | None, metric: str) -> pd.DataFrame | None:
        tables = [r.ranks for r in runs]
        if not tables or any(t is None or f"rank_{self.model}" not in t for t in tables):
            return None
        base = tables[0][[*KEYS, "domain", "group"]].copy()
        base["occurrence"] = base.groupby(KEYS).cumcount()
        values = np.stack([per_target(t[f"rank_{self.model}"].to_numpy(), metric) for t in tables])
        if any(not t[KEYS].equals(tables[0][KEYS]) for t in tables[1:]):
            raise ValueError(f"{self.label}: the seeds' runs ranked different targets")
        base["value"] = values.mean(axis=0)
        for i, row in enumerate(values):
            base[f"seed{i}"] = row
        return base if domain is None else base[base["domain"] == domain]

    def values(self, metric: str, where: Callable[[pd.DataFrame], pd.Series] | None = None) -> pd.DataFrame | None:
        """Per target: keys, domain, group, `value` (mean over seeds) and `seed<i>` columns; None without ranks."""
        parts = [self._part_values(runs, domain, metric) for runs, domain in self.parts]
        if not parts or any(p is None for p in parts):
            return None
        table = pd.concat(parts, ignore_index=True)
        return table[where(table)].reset_index(drop=True) if where is not None else table

    def summary(self, metric: str, where=None,
                weights: Callable[[pd.DataFrame], np.ndarray] | None = None) -> tuple[float | None, float | None, int]:
        """(mean over seeds, standard deviation across seeds or None with one seed, targets). `weights`, given the
        per-target table, says how many events each target stands for (a sampled target counts for those it
        represents); the mean is then weighted and the count is the events'."""
        table = self.values(metric, where)
        if table is None or not len(table):
            return None, None, 0
        counts = np.ones(len(table)) if weights is None else np.asarray(weights(table), dtype=float)
        per_seed = [float(np.average(table[f"seed{i}"], weights=counts)) for i in range(self.seeds)]
        spread = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
        return float(np.mean(per_seed)), spread, int(round(counts.sum()))


def compare(a: Arm, b: Arm, metric: str, where=None, seed: int = 0) -> Interval | None:
    """a minus b on `metric` with a 95% bootstrap interval: paired when both ranked the same targets."""
    ta, tb = a.values(metric, where), b.values(metric, where)
    if ta is None or tb is None or not len(ta) or not len(tb):
        return None
    if len(ta) == len(tb):
        on = [*KEYS, "occurrence"]
        merged = ta[[*on, "value"]].merge(tb[[*on, "value"]], on=on, suffixes=("_a", "_b"))
        if len(merged) == len(ta):
            users = merged["user_idx"].to_numpy()
            several = len(np.unique(users)) < len(users)  # users with several targets: resample users
            return paired_interval(merged["value_a"].to_numpy(), merged["value_b"].to_numpy(), seed,
                                   clusters=users if several else None)
    return unpaired_interval(ta["value"].to_numpy(), tb["value"].to_numpy(), seed)


def per_seed_differences(a: Arm, b: Arm, metric: str, where=None) -> list[float] | None:
    """Each of a's runs (seeds) on `metric` minus b's mean over its seeds. The interval of `compare` is over targets,
    for the mean over seeds; this shows how far single runs spread around it."""
    ta, tb = a.values(metric, where), b.values(metric, where)
    if ta is None or tb is None or not len(ta) or not len(tb):
        return None
    baseline = tb["value"].mean()
    return [float(ta[f"seed{i}"].mean() - baseline) for i in range(a.seeds)]

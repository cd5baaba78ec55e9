"""The registered claims (lab/claims.yaml) and their verdicts on one dataset's runs.

A claim's arms are (experiment, model); an arm's runs are the experiment's seeds that finished after the claim was
registered (the commit that added it to claims.yaml). The verdict comes from the two-level interval of A minus B on
the claim's targets (report/stats.py); a claim short of runs is "pending" and says what it waits for.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .report.stats import Interval, per_target, two_level_interval

CLAIMS = Path(__file__).with_name("claims.yaml")
TARGETS = {"all", "tail", "head", "cold", "new", "warm"}
KEYS = ["user_idx", "target"]


@dataclass(frozen=True)
class Claim:
    id: str
    says: str
    a: dict
    b: dict
    metric: str
    targets: str
    same_targets_only: bool = False


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # holds | does not hold | inconclusive | pending | not applicable (no such targets)
    why: str
    interval: Interval | None = None
    seeds: tuple[int, int] = (0, 0)
    by_user: Interval | None = None  # users drawn instead of targets, where a user has several targets


def load_claims(path: Path = CLAIMS) -> tuple[list[Claim], dict[str, int]]:
    """The claims and the seeds each arm needs per dataset; refuses a malformed file."""
    doc = yaml.safe_load(path.read_text())
    claims = [Claim(**c) for c in doc["claims"]]
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: claim ids must be unique")
    for c in claims:
        if c.targets not in TARGETS or any(not {"experiment", "model"} <= set(arm) for arm in (c.a, c.b)):
            raise ValueError(f"{path}: claim {c.id}: arms need experiment and model; targets one of {sorted(TARGETS)}")
    return claims, dict(doc["min_seeds"])


def registered_at(claim: Claim, path: Path = CLAIMS) -> datetime | None:
    """When the commit that added the claim was made (None while the claim is uncommitted)."""
    out = subprocess.run(["git", "log", "--reverse", "--format=%cI", "-S", f"id: {claim.id}\n", "--", path.name],
                         cwd=path.parent, capture_output=True, text=True)
    dates = out.stdout.split()
    return datetime.fromisoformat(dates[0]).replace(tzinfo=None) if out.returncode == 0 and dates else None


def _subset(table: pd.DataFrame, targets: str) -> pd.Series:
    if targets == "all":
        return pd.Series(True, index=table.index)
    if targets == "warm":
        return table["group"] != "new"
    return table["group"] == targets


def arm_matrix(runs: list[pd.DataFrame], model: str, metric: str, targets: str) -> pd.DataFrame | None:
    """[targets x seeds] of `metric` for `model` over the runs' ranks tables (None if a run lacks the model)."""
    if not runs or any(f"rank_{model}" not in r for r in runs):
        return None
    base = runs[0][[*KEYS, "group"]].copy()
    base["occurrence"] = base.groupby(KEYS).cumcount()
    for i, ranks in enumerate(runs):
        if not ranks[KEYS].equals(runs[0][KEYS]):
            raise ValueError("the seeds' runs ranked different targets")
        base[f"seed{i}"] = per_target(ranks[f"rank_{model}"].to_numpy(), metric)
    return base[_subset(base, targets).to_numpy()].reset_index(drop=True)


def _verdict(interval: Interval) -> str:
    """A claim's word for an interval: holds, does not hold, or inconclusive."""
    return interval.verdict if interval.verdict in ("holds", "does not hold") else "inconclusive"


def judge(claim: Claim, runs: dict[str, list[tuple[pd.DataFrame, datetime]]], min_seeds: int,
          since: datetime | None) -> Verdict:
    """The claim's verdict from `runs` (experiment -> [(ranks table, finished at)]) of one dataset."""
    if since is None:
        return Verdict(claim, "pending", "not registered yet: commit lab/claims.yaml before its runs start")
    arms = []
    for arm in (claim.a, claim.b):
        made = runs.get(arm["experiment"], [])
        counted = [ranks for ranks, finished in made if finished > since]
        if len(counted) < min_seeds:
            early = len(made) - len(counted)
            return Verdict(claim, "pending", f"{arm['experiment']} has {len(counted)} of the {min_seeds} runs it needs "
                           f"finished after registration" + (f" ({early} earlier runs do not count)" if early else ""))
        matrix = arm_matrix(counted, arm["model"], claim.metric, claim.targets)
        if matrix is None:
            return Verdict(claim, "pending", f"{arm['experiment']}'s runs do not rank with {arm['model']}")
        arms.append(matrix)
    on = [*KEYS, "occurrence"]
    a_side, b_side = (m.rename(columns=lambda c, s=side: f"{s}_{c}" if c.startswith("seed") else c)
                      for m, side in zip(arms, "ab"))
    merged = a_side.merge(b_side.drop(columns="group"), on=on)
    if not claim.same_targets_only and not (len(merged) == len(arms[0]) == len(arms[1])):
        return Verdict(claim, "pending", "the arms ranked different targets")
    if not len(merged):  # more runs will not change it: the protocol has no such targets
        seeds = tuple(sum(c.startswith("seed") for c in m.columns) for m in arms)
        return Verdict(claim, "not applicable", f"this experiment's split has no {claim.targets} targets", seeds=seeds)
    a = np.stack([merged[c] for c in merged if c.startswith("a_seed")])
    b = np.stack([merged[c] for c in merged if c.startswith("b_seed")])
    interval = two_level_interval(a, b)
    verdict = _verdict(interval)
    # the same scoring on both sides (an arm whose setting was frozen to the other's): no run can decide it
    why = (f"A and B rank every target identically: {interval.brief()}"
           if np.array_equal(a, b) else interval.brief())
    by_user = None
    users = merged["user_idx"].to_numpy()
    if len(np.unique(users)) < len(users):
        # A time split asks a user several targets, which move together; the registered rule draws targets, so this
        # check (added after registration) is shown beside the verdict and never changes it.
        by_user = two_level_interval(a, b, clusters=users)
        other = _verdict(by_user)
        why += (f"; drawing users instead ({len(np.unique(users)):,} users): {by_user.brief()}, "
                + ("the same verdict" if other == verdict else f"which would make it {other}"))
    return Verdict(claim, verdict, why, interval, (len(a), len(b)), by_user)

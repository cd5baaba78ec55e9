"""The report's first section: each registered claim (lab/claims.yaml) with its verdict on every dataset it is
registered for (this report's runs, and the other datasets' runs read from their params files in configs/)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from llmrec_core.markdown import table
from ..claims import CLAIMS, judge, load_claims, registered_at
from ..experiments import read_stamp
from .collect import load_runs

CONFIGS = CLAIMS.parents[1] / "configs"  # configs/<dataset>.yaml: each dataset's experiments


def _finished(run) -> datetime | None:
    stamp = read_stamp(run.params) or {}
    return datetime.fromisoformat(stamp["finished_at"]) if stamp.get("finished_at") else None


def claim_runs(runs: list) -> dict[str, list]:
    """experiment -> [(ranks table, finished at)] of the finished runs that have per-target ranks."""
    found: dict[str, list] = {}
    for run in runs:
        finished = _finished(run)
        if run.ranks is not None and finished is not None:
            found.setdefault(run.experiment, []).append((run.ranks, finished))
    return found


def withheld_experiments(dataset: str, runs: list) -> dict[str, str]:
    """Experiments that an arm of a registered claim still short of runs on `dataset` needs, with what it waits for:
    the report keeps their runs out of every section but this one until the claim is decided, so that nobody reads a
    confirmatory test result before its last registered seed (and is tempted to change course on it)."""
    claims, min_seeds = load_claims()
    if dataset not in min_seeds:
        return {}
    made, need, withheld = claim_runs(runs), min_seeds[dataset], {}
    for claim in claims:
        since = registered_at(claim)
        for arm in (claim.a, claim.b):
            runs_of_arm = made.get(arm["experiment"], [])
            counted = sum(finished > since for _, finished in runs_of_arm) if since else 0
            if runs_of_arm and counted < need:
                withheld[arm["experiment"]] = f"{counted} of the {need} runs `{claim.id}` needs"
    return withheld


def registered_claims(report) -> str:
    claims, min_seeds = load_claims()
    own = Path(report.params_path).stem
    if own not in min_seeds:
        return (f"No claim is registered for `{own}` (lab/claims.yaml registers claims for "
                f"{', '.join(min_seeds)}): every section of this report is exploratory.")
    by_dataset = {dataset: claim_runs([*report.runs, *getattr(report, "withheld", [])] if dataset == own else
                                      load_runs(CONFIGS / f"{dataset}.yaml") if (CONFIGS / f"{dataset}.yaml").is_file()
                                      else [])
                  for dataset in min_seeds}
    rows = []
    for claim in claims:
        since = registered_at(claim)
        for dataset, need in min_seeds.items():
            verdict = judge(claim, by_dataset[dataset], need, since)
            rows.append([claim.id, claim.says, dataset, f"{claim.a['model']} (`{claim.a['experiment']}`) − "
                         f"{claim.b['model']} (`{claim.b['experiment']}`)", f"{claim.metric}, {claim.targets} targets",
                         since.strftime("%Y-%m-%d") if since else "–", f"{verdict.seeds[0]} / {verdict.seeds[1]}",
                         verdict.verdict, verdict.why])
    needs = ", ".join(f"{n} on {d}" for d, n in min_seeds.items())
    return ("Claims registered in `lab/claims.yaml` before their confirmatory runs, each decided by its rule: A − B "
            "with a two-level 95% bootstrap interval (each arm's seeds redrawn, then the targets, paired); it holds "
            "when the interval lies above zero, does not hold when it lies below, else it is inconclusive; a claim on "
            "targets its experiment's split does not have is not applicable there. Where a split asks a user several "
            "targets (a time split), they are not independent: the interval drawing users instead of targets is shown "
            "beside the verdict, a check added after registration that never changes it. Only runs "
            f"that finished after a claim's registration count, and it needs that many runs per arm ({needs}). "
            "Configurations are frozen on ml-100k; ml-1m runs them unchanged (its own params file, "
            "`configs/ml-1m.yaml`, on a stated sample of its users). **Every other section of this report is "
            "exploratory**: its intervals are over targets only, for the mean over seeds, and its comparisons were "
            "not registered.\n\n"
            + table(["claim", "says", "data", "A − B", "metric", "registered", "runs A / B", "verdict",
                     "interval or why"], rows))

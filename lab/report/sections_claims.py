"""The report's first section: each registered claim (lab/claims.yaml) with its verdict on this dataset."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from llmrec_core.markdown import table
from ..claims import judge, load_claims, registered_at
from ..experiments import read_stamp


def _finished(run) -> datetime | None:
    stamp = read_stamp(run.params) or {}
    return datetime.fromisoformat(stamp["finished_at"]) if stamp.get("finished_at") else None


def registered_claims(report) -> str:
    claims, min_seeds = load_claims()
    dataset = Path(report.params_path).stem
    need = min_seeds.get(dataset)
    if need is None:
        return (f"No claim is registered for `{dataset}` (lab/claims.yaml registers claims for "
                f"{', '.join(min_seeds)}): every section of this report is exploratory.")
    runs: dict[str, list] = {}
    for run in report.runs:
        finished = _finished(run)
        if run.ranks is not None and finished is not None:
            runs.setdefault(run.experiment, []).append((run.ranks, finished))
    rows = []
    for claim in claims:
        since = registered_at(claim)
        verdict = judge(claim, runs, need, since)
        rows.append([claim.id, claim.says, f"{claim.a['model']} (`{claim.a['experiment']}`) − "
                     f"{claim.b['model']} (`{claim.b['experiment']}`)", f"{claim.metric}, {claim.targets} targets",
                     since.strftime("%Y-%m-%d") if since else "–", f"{verdict.seeds[0]} / {verdict.seeds[1]}",
                     verdict.verdict, verdict.why])
    return ("Claims registered in `lab/claims.yaml` before their confirmatory runs, each decided by its rule: A − B "
            "with a two-level 95% bootstrap interval (each arm's seeds redrawn, then the targets, paired); it holds "
            "when the interval lies above zero. Only runs that finished after a claim's registration count, and it "
            f"needs {need} runs per arm on {dataset}. **Every other section of this report is exploratory**: its "
            "intervals are over targets only, for the mean over seeds, and its comparisons were not registered.\n\n"
            + table(["claim", "says", "A − B", "metric", "registered", "runs A / B", "verdict", "interval or why"], rows))

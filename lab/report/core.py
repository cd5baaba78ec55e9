"""The report's data: every run of the experiments, grouped, with the selections and comparisons its sections use."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from llmrec_core.config import load_params
from llmrec_core.data.layout import DataLayout
from llmrec_core.provenance import EXPERIMENT_CODE

from .collect import Arm, Run, compare, load_benchmarks, load_runs, missing_runs, read_json
from .labels import MODEL_LABELS, lm_budget, weights_origin
from .markdown import fmt
from .sections_claims import withheld_experiments
from .stats import LEVEL, RESAMPLES


class Report:
    """The run records of a params file's experiments, and what every section asks of them."""

    def __init__(self, params_path: Path, out: Path):
        self.params_path, self.out = params_path, out
        self.base = load_params(params_path)
        runs = load_runs(params_path)
        # the runs of a registered claim still short of runs: only the claims section sees them (sections_claims)
        self.withheld_why = withheld_experiments(Path(params_path).stem, runs)
        self.withheld = [r for r in runs if r.experiment in self.withheld_why]
        self.runs = [r for r in runs if r.experiment not in self.withheld_why]
        self.missing = missing_runs(params_path)
        # leave-one-out experiments feed every section but "New items", which reads the time-split ones
        self.experiments: dict[str, list[Run]] = {}
        self.time_experiments: dict[str, list[Run]] = {}
        for run in self.runs:
            (self.time_experiments if run.time_split else self.experiments).setdefault(run.experiment, []).append(run)
        self.figures_dir = out.parent / "figures"
        self.bench = load_benchmarks(self.base.resolve(self.base.report.benchmarks_dir))
        self.manifest = read_json(DataLayout(self.base.data_root).prepared / "manifest.json") or {}
        self.domains = list(self.manifest.get("domains", {}))
        self.baseline = next((name for name, runs in self.experiments.items()
                              if runs[0].setting == "mixed" and runs[0].has("popularity")), None)
        self.section_numbers: dict[str, int] = {}

    def first(self, name: str) -> Run:
        return self.experiments[name][0]

    def changes(self, name: str) -> dict:
        """What experiment `name` sets that differs from the base config: its `set` without the keys that repeat
        the base's value (an anchor may hold them for other experiments' sake)."""
        entry = next(e for e in self.base.experiments if e.name == name)
        params = self.first(name).params

        def value(of, key: str):
            section, *path = key.split(".")
            node = getattr(of, section).model_dump(mode="json")
            for part in path:  # e.g. train.lora.r
                node = node.get(part) if isinstance(node, dict) else None
            return node

        return {key: v for key, v in entry.set.items() if value(params, key) != value(self.base, key)}

    def arm(self, name: str, model: str, label: str | None = None, domain: str | None = None) -> Arm:
        return Arm.of(label or f"{MODEL_LABELS[model]} (`{name}`)", model, self.experiments[name], domain)

    def tuned_mixed(self) -> list[str]:
        """Mixed-setting experiments with a tuned LM, in file order."""
        return [n for n, runs in self.experiments.items()
                if runs[0].setting == "mixed" and runs[0].has("llmrec") and runs[0].cost_train]

    def valid_ndcg(self, name: str, model: str = "llmrec") -> float | None:
        values = [r.valid_ndcg(model) for r in self.experiments[name]]
        return sum(values) / len(values) if values and None not in values else None

    def headline_experiment(self, model: str = "llmrec") -> str | None:
        """The Mixed experiment whose tuned `model` (llmrec or seqhead) has the best mean NDCG@10 on the whole
        validation split."""
        names = self.tuned_mixed() if model == "llmrec" else [
            n for n, runs in self.experiments.items() if runs[0].setting == "mixed" and runs[0].has(model)]
        scored = [(self.valid_ndcg(n, model), n) for n in names if self.valid_ndcg(n, model) is not None]
        return max(scored)[1] if scored else None

    def same_budget(self, run: Run, setting: str) -> str | None:
        """The experiment of `setting` whose LM matches `run`'s model, tuning and budget."""
        key = (run.model_name, run.tuning, lm_budget(run))
        return next((n for n, runs in self.experiments.items() if runs[0].setting == setting
                     and runs[0].has("llmrec") and (runs[0].model_name, runs[0].tuning, lm_budget(runs[0])) == key),
                    None)

    def best_rate(self, name: str) -> float:
        """Training samples/s of the experiment's least-disturbed seed (runs may share the CPU with other work)."""
        return max(r.cost_train["samples_per_s"] for r in self.experiments[name] if r.cost_train)

    def ref(self, key: str) -> str:
        return f"section {self.section_numbers[key]}" if key in self.section_numbers else "a later section"

    def figure(self, name: str) -> Path:
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        return self.figures_dir / name

    def link(self, path: Path) -> str:
        return f"![{path.stem}]({path.relative_to(self.out.parent).as_posix()})"

    def _targets(self, domain: str) -> int | None:
        return self.manifest.get("domains", {}).get(domain, {}).get("test_targets")

    @staticmethod
    def comparison_rows(pairs: list[tuple[str, Arm, Arm, str, Callable | None]]) -> list[list]:
        """Rows of (comparison, scope, metric, difference, interval, verdict) for (text, a, b, metric, where)."""
        rows = []
        for text, a, b, metric, where in pairs:
            ci = compare(a, b, metric, where)
            if ci is not None:
                rows.append([text, metric.replace("ndcg", "NDCG").replace("recall", "Recall"), f"{ci.diff:+.4f}",
                             f"{ci.low:+.4f} to {ci.high:+.4f}", ci.targets, "paired" if ci.paired else "unpaired",
                             ci.verdict])
        return rows

    COMPARISON_COLUMNS = ["claim (A better than B)", "metric", "A − B", "95% CI", "targets", "bootstrap", "verdict"]

    def header(self) -> str:
        devices = sorted({c["device"] + (f" ×{c['device_count']}" if c.get("gpu") else f" ({c['device_count']} threads)")
                          for r in self.runs for c in (r.cost_train, r.cost_sasrec, r.cost_seqhead, *r.cost_eval.values())
                          if c})
        sources = ", ".join(f"{s.name} ({s.format})" for s in self.base.data.sources)
        m = self.manifest
        models = sorted({f"`{r.model_name}`: {weights_origin(r)}" for r in self.runs if r.has("llmrec") or r.has("zero_shot")})
        commits = sorted({r.commit for r in self.runs})
        earlier = sorted({r.commit for r in self.runs if r.status[0] == "earlier code"})
        stale = [r.name for r in self.runs if r.status[0] not in ("current", "earlier code")]
        seeds = sorted({len(runs) for runs in self.experiments.values()})
        lines = [
            f"# LLM-Rec analyses on {sources}", "",
            f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `llmrec-lab report --params {self.params_path}` from the run "
            f"records of the experiments listed in that file (`llmrec-lab analyses` runs them). No number below is typed in.", "",
            f"- **Machine**: {'; '.join(devices) or 'no runs yet'}.",
            f"- **Dataset**: {sources}; after preparation {fmt(m.get('users'))} users, {fmt(m.get('items'))} items, "
            f"{fmt(m.get('interactions_kept'))} interactions in {len(self.domains)} domains ({', '.join(self.domains)}).",
            f"- **Weights**: {'; '.join(models) or '–'}. Size-sweep cost rows use random-init weights: cost only, no quality.",
            f"- **Protocol**: {self.base.eval.protocol} ranking of each test target against its domain's items, "
            f"{'every item the user rated before the target excluded' if self.base.eval.exclude_history else 'seen items included'}"
            f"; the last item of each user is the test target"
            f"{' (the new-item section: every event of a window after a training cutoff)' if self.time_experiments else ''}.",
            f"- **Uncertainty**: experiments run with {' or '.join(map(str, seeds)) or '–'} seed(s); a metric is the mean "
            f"over seeds ± their standard deviation. Each difference carries a {LEVEL:.0%} bootstrap interval over test "
            f"targets ({RESAMPLES:,} resamples of the per-target values averaged over seeds; paired when both arms "
            f"ranked the same targets). A verdict is \"holds\" or \"does not hold\" only when the interval excludes zero.",
            f"- **Code**: runs made at commit(s) {', '.join(f'`{c}`' for c in commits) or '–'} (`*`: with uncommitted "
            f"changes to the code behind them); per run in the last section.",
        ]
        lines += [f"- **Note**: {note}" for note in self.base.report.notes]
        if earlier:
            lines.append(f"- **Earlier code**: the runs marked \"earlier code\" below have today's params and data, but "
                         f"the code behind their results (llmrec_core/{{{','.join(EXPERIMENT_CODE)}}}) changed since "
                         f"the commit(s) they were made at ({', '.join(f'`{c}`' for c in earlier)}); their numbers are "
                         f"those of that code. `llmrec-lab analyses --rerun-earlier-code` reruns them.")
        if stale:
            lines.append(f"- **Stale** (params or data changed since they ran; `llmrec-lab analyses` reruns them): "
                         f"{', '.join(stale)}.")
        if self.withheld:
            lines.append(f"- **Withheld until their registered claims are decided**: "
                         + "; ".join(f"`{e}` ({why})" for e, why in self.withheld_why.items())
                         + f". Their {len(self.withheld)} finished run(s) appear in no section but the claims' until "
                         "then, so that no confirmatory test number is read before its last registered seed.")
        if self.missing:
            lines.append(f"- **Not run yet**: {', '.join(self.missing)} (`llmrec-lab analyses --params {self.params_path}`).")
        return "\n".join(lines)

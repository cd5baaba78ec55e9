"""Sections on LLM-Rec's quality: the headline, the levers, data settings, model size, FPFT vs LoRA, negatives."""
from __future__ import annotations

from llmrec_core.config import SEED_RUN
from . import figures
from .collect import Arm, compare
from .core import Report
from .labels import (MODEL_LABELS, SETTINGS, TUNINGS, budget_text, in_domain, in_group, lm_budget, negatives_text,
                     reads_tuned_lm, runs_ahead, said, seed_spread, train_time_text, tuning_table, weights_origin)
from .markdown import fmt, mean_sd, table


def headline(report: Report) -> str:
    """Section: the chosen LLM-Rec against SASRec, popularity and the untuned LM, with intervals and the goal's
    verdict."""
    best, base = report.headline_experiment(), report.baseline
    if best is None or base is None:
        return "Not run: needs a Mixed-setting LLM-Rec experiment and one with the baselines."
    head = report.headline_experiment("seqhead")
    ours = [report.arm(best, "llmrec")] + ([report.arm(head, "seqhead")] if head else [])
    baselines = [report.arm(base, m) for m in ("sasrec", "popularity", "zero_shot") if report.first(base).has(m)]
    arms = ours + baselines
    rows = []
    for a in arms:
        ndcg, recall = a.summary("ndcg@10"), a.summary("recall@10")
        rows.append([a.label, a.seeds, budget_text(a), ndcg[2], mean_sd(*ndcg[:2]), mean_sd(*recall[:2]),
                     mean_sd(*a.summary("ndcg@10", in_group("tail"))[:2]),
                     mean_sd(*a.summary("ndcg@10", in_group("head"))[:2])])
    chosen = f"`{best}`, the experiment with the best mean NDCG@10 on the whole validation split " \
             f"({fmt(report.valid_ndcg(best))}) among {len(report.tuned_mixed())} Mixed-setting LLM-Rec experiments"
    if head:
        chosen += (f"; the sequence head over the LM's item vectors (UniSRec-style) is `{head}`, chosen the same way "
                   f"({fmt(report.valid_ndcg(head, 'seqhead'))})")
    out = [f"Mixed setting, test split. LLM-Rec is {chosen}; the baselines come from `{base}`.", "",
           table(["model", "seeds", "budget", "targets", "NDCG@10", "Recall@10", "tail NDCG@10", "head NDCG@10"],
                 rows), ""]
    pairs = [(f"{a.label} vs {b.label}", a, b, "ndcg@10", None) for a in ours for b in baselines]
    pairs += [(f"{a.label} vs {b.label}, tail targets", a, b, "ndcg@10", in_group("tail"))
              for a in ours for b in baselines[:2]]
    out += ["Differences (A minus B):", "", table(report.COMPARISON_COLUMNS, report.comparison_rows(pairs)), ""]
    sasrec = next((b for b in baselines if b.model == "sasrec"), None)
    verdicts = goal_verdict(ours, sasrec)[:-1] + _goal_elsewhere(report, {(best, "llmrec"), (head, "seqhead")}, sasrec)
    out += verdicts + [""] if verdicts else []
    lm = arms[0]
    by_domain = []
    for d in report.domains:
        row = [d, report._targets(d)] + [mean_sd(*a.summary("ndcg@10", in_domain(d))[:2]) for a in arms]
        for b in baselines[:2]:
            ci = compare(lm, b, "ndcg@10", in_domain(d))
            row.append(ci.brief() if ci else None)
        by_domain.append(row)
    out += ["Per domain (NDCG@10; differences with their 95% interval):", "",
            table(["domain", "targets", *(a.label.split(" (")[0] for a in arms),
                   *(f"LLM-Rec − {b.label.split(' (')[0]}" for b in baselines[:2])], by_domain), ""]
    for b in baselines[:2]:
        cis = [compare(lm, b, "ndcg@10", in_domain(d)) for d in report.domains]
        cis = [c for c in cis if c is not None]
        if cis:
            out.append(f"- Against {b.label.split(' (')[0]}, per domain (shown, not deciding): ahead on "
                       f"{sum(c.diff > 0 for c in cis)} of {len(cis)} domains, with an interval above zero on "
                       f"{sum(c.low > 0 for c in cis)} and below zero on {sum(c.high < 0 for c in cis)}.")
    return "\n".join(out)


def vs_sasrec(a: Arm, sasrec: Arm) -> tuple:
    """Goal 1's two intervals: `a` minus SASRec on NDCG@10, overall and on tail targets (None where not ranked)."""
    return compare(a, sasrec, "ndcg@10"), compare(a, sasrec, "ndcg@10", in_group("tail"))


def goal_verdict(ours: list[Arm], sasrec: Arm | None) -> list[str]:
    """Whether an LLM-Rec arm reaches the standard SASRec's NDCG@10 overall and on tail targets."""
    if sasrec is None:
        return []
    lines = []
    for a in ours:
        overall, tail = vs_sasrec(a, sasrec)
        if overall is None or tail is None:
            continue
        single = runs_ahead(a, sasrec), runs_ahead(a, sasrec, in_group("tail"))
        lines.append(f"- **{a.label} ≥ SASRec** (NDCG@10, overall and tail): {goal_met(overall, tail)}; "
                     f"overall {overall.brief()}, tail {tail.brief()}."
                     + (f" Single runs ahead of SASRec's mean: {single[0]} overall, {single[1]} on the tail."
                        if all(single) else ""))
    return lines + [""] if lines else []


def levers(report: Report) -> str:
    """Every Mixed-setting tuned model against the standard SASRec: what each experiment changes and how far it
    moves NDCG@10 (the ablation of the levers tried toward goal 1)."""
    base = report.baseline
    if base is None or not report.first(base).has("sasrec"):
        return "Not run: needs a Mixed-setting experiment with SASRec."
    sasrec = report.arm(base, "sasrec")
    sets = {name: report.changes(name) for name in report.experiments}
    rows = []
    for name, runs in report.experiments.items():
        if runs[0].setting != "mixed":
            continue
        for model in ("llmrec", "seqhead"):
            if not runs[0].has(model) or (model == "llmrec" and not runs[0].cost_train):
                continue
            arm = report.arm(name, model)
            ci, tail_ci = vs_sasrec(arm, sasrec)
            own_lm = reads_tuned_lm(runs[0], model)  # its LM's training settings are its own
            # sections that decide no result of this model (which models run, serving, other models' knobs)
            unshown = {"eval", "index", "sasrec"} | ({"seqhead"} if model == "llmrec" else set()) | (
                {"train"} if model == "seqhead" and not own_lm else set())
            changed = ", ".join(f"`{k}={v}`" for k, v in sets.get(name, {}).items()
                                if k.split(".")[0] not in unshown and not k.endswith("run_dir")) or "base config"
            rows.append([f"`{name}`", MODEL_LABELS[model], changed, budget_text(arm), train_time_text(arm), arm.seeds,
                         report.valid_ndcg(name, model), mean_sd(*arm.summary("ndcg@10")[:2]),
                         mean_sd(*arm.summary("ndcg@10", in_group("tail"))[:2]),
                         ci.brief() if ci else None, tail_ci.brief() if tail_ci else None,
                         goal_met(ci, tail_ci)])
    # goal 1 asks for both, so each lever is shown on all targets and on tail targets
    pairs = [row for text, a, b, metric, _ in _same_budget_pairs(report, sets)
             for row in ((text, a, b, metric, None), (f"{text}, tail targets", a, b, metric, in_group("tail")))]
    lever_text = ["", "Each lever against the experiment of the same model and LM budget that sets the least, and "
                  "against the experiment it names (`compare_to`), paired on the test targets, all and tail:", "",
                  table(report.COMPARISON_COLUMNS, report.comparison_rows(pairs))] if pairs else []
    lever_text += _sasrec_variants(report, sets, sasrec)
    head = report.headline_experiment("seqhead")
    reference = _sasrec_in_use(report)
    for stem in sorted(k for k in report.bench if k.startswith("seqhead_tuning")) if head else []:
        grid = report.bench[stem]  # a grid over the head's seed is a spread; any other, a choice
        lever_text += ["", *(seed_spread(grid, _seed_runs(report, grid.get("experiment"))) or tuning_table(
            grid, report.first(head).params, f"the headline head's (`{head}`) values", reference))]
    is_base = head and all(k.startswith("eval.") for k in sets.get(head, {}))
    return "\n".join([f"Every Mixed-setting experiment's tuned model against SASRec (`{base}`), on the test split; "
                      f"each row says what its experiment sets on top of the base config (`{report.params_path}`)"
                      + (f", which is the headline head's (`{head}`): a head's row says what it takes back from "
                         "it. " if is_base else ". ") +
                      "valid: the whole validation split, on which configurations are chosen. training: the mean "
                      "time of the train phase per run, on the device named (runs on a GPU at a CPU budget give "
                      "CPU-budget quality in GPU time).", "",
                      table(["experiment", "model", "sets", "budget", "training", "seeds", "valid NDCG@10", "NDCG@10",
                             "tail NDCG@10", "− SASRec (95% CI)", "tail − SASRec (95% CI)",
                             "goal 1 (≥ SASRec, overall and tail)"], rows), *lever_text])


def _sasrec_variants(report: Report, sets: dict, sasrec: Arm) -> list[str]:
    """SASRec with a lever of the head (an experiment that sets `sasrec.*`, e.g. `sasrec.members`) against the
    standard SASRec: how much of a lever's gain an ID model gets too; and the headline head against each variant."""
    head_name = report.headline_experiment("seqhead")
    head = report.arm(head_name, "seqhead") if head_name else None
    rows = []
    for name, runs in report.experiments.items():
        changed = {k: v for k, v in sets.get(name, {}).items() if k.startswith("sasrec.")}
        if name == report.baseline or not changed or runs[0].setting != "mixed" or not runs[0].has("sasrec"):
            continue
        arm = report.arm(name, "sasrec")
        ci, tail_ci = vs_sasrec(arm, sasrec)
        head_ci, head_tail_ci = vs_sasrec(head, arm) if head else (None, None)
        rows.append([f"`{name}`", ", ".join(f"`{k}={v}`" for k, v in changed.items()), budget_text(arm),
                     train_time_text(arm), arm.seeds, mean_sd(*arm.summary("ndcg@10")[:2]),
                     mean_sd(*arm.summary("ndcg@10", in_group("tail"))[:2]),
                     *(c.brief() if c else None for c in (ci, tail_ci, head_ci, head_tail_ci))])
    if not rows:
        return []
    return ["", "The same levers on SASRec itself, against the standard SASRec (what an ID model gets from them "
            f"too; goal 1 compares with the standard one), and the headline head (`{head_name}`) against each "
            "variant (shown, not deciding):", "",
            table(["experiment", "sets", "budget", "training", "seeds", "NDCG@10", "tail NDCG@10",
                   "− SASRec (95% CI)", "tail − SASRec (95% CI)", "head − this (95% CI)",
                   "tail: head − this (95% CI)"], rows)]


def _seed_runs(report: Report, run: str | None) -> list:
    """Every seed's run of the experiment that `run` (e.g. `x.seed0`) belongs to."""
    found = SEED_RUN.match(run or "")
    return report.experiments.get(found["experiment"], []) if found else []


def _sasrec_in_use(report: Report) -> dict | None:
    """SASRec's validation numbers at the params file's values, from its most recent grid (the trainer may have
    changed since an older one): the reference of goal 1's rule in the head's tuning tables."""
    found = [(grid.get("machine", {}).get("date", ""), p) for stem, grid in report.bench.items()
             if stem.startswith("sasrec_tuning") for p in grid["points"]
             if all(p[k] == getattr(report.base.sasrec, k.split(".")[1]) for k in grid["grid"])]
    return max(found, key=lambda f: f[0])[1] if found else None


def _goal_elsewhere(report: Report, shown: set, sasrec: Arm | None) -> list[str]:
    """The other Mixed experiments whose tuned model meets goal 1 in the means (section 2 has them all)."""
    if sasrec is None:
        return []
    lines = []
    for name, runs in report.experiments.items():
        for model in ("llmrec", "seqhead"):
            if runs[0].setting != "mixed" or (name, model) in shown or not runs[0].has(model) or (
                    model == "llmrec" and not runs[0].cost_train):
                continue
            a = report.arm(name, model)
            overall, tail = vs_sasrec(a, sasrec)
            verdict = goal_met(overall, tail)
            if verdict not in (None, "not reached"):
                lines.append(f"- Not chosen on validation ({fmt(report.valid_ndcg(name, model))}), {a.label}: goal 1 "
                             f"{verdict}; overall {overall.brief()}, tail {tail.brief()}.")
    return lines


def goal_met(overall, tail) -> str | None:
    """Goal 1 for one model in words: its mean NDCG@10 against SASRec's, overall and on tail targets, and whether
    the intervals settle it."""
    if overall is None or tail is None:
        return None
    if overall.diff >= 0 and tail.diff >= 0:
        return "holds" if overall.verdict == tail.verdict == "holds" else "met in the means, not settled"
    return "not reached"


def _same_budget_pairs(report: Report, sets: dict) -> list:
    """(claim, lever arm, anchor arm, metric, None) for Mixed LLM-Rec experiments that share a model and an LM
    budget (steps, batch, examples, user tokens): each against the one of them whose `set` changes the fewest
    keys of the LM (the first in the params file on a tie); then the pairs experiments name (`_named_pairs`)."""
    groups: dict[tuple, list[str]] = {}
    for name, runs in report.experiments.items():
        if runs[0].setting == "mixed" and runs[0].has("llmrec") and runs[0].cost_train:
            groups.setdefault((runs[0].model_name, lm_budget(runs[0])), []).append(name)
    pairs = []
    for names in groups.values():
        anchor = min(names, key=lambda n: sum(k.split(".")[0] in ("train", "model") for k in sets.get(n, {})))
        pairs += [(f"`{n}` vs `{anchor}`", report.arm(n, "llmrec"), report.arm(anchor, "llmrec"), "ndcg@10", None)
                  for n in names if n != anchor]
    return pairs + _named_pairs(report, pairs)


def _named_pairs(report: Report, done: list) -> list:
    """Each Mixed experiment that names the one it is a lever against (`compare_to`), for every tuned model both
    ran (the LM, the sequence head), unless the same-budget pairs already hold it."""
    held = {(a.label, b.label) for _, a, b, _, _ in done}
    pairs = []
    for e in report.base.experiments:
        if e.compare_to is None or e.name not in report.experiments or e.compare_to not in report.experiments:
            continue
        lever, anchor = report.first(e.name), report.first(e.compare_to)
        if lever.setting != "mixed":
            continue
        for model in ("llmrec", "seqhead"):
            if lever.has(model) and anchor.has(model):
                a, b = report.arm(e.name, model), report.arm(e.compare_to, model)
                if (a.label, b.label) not in held:
                    pairs.append((f"`{e.name}` vs `{e.compare_to}` ({MODEL_LABELS[model]}, named by compare_to)",
                                  a, b, "ndcg@10", None))
    return pairs


def first_per_domain(singles: list[tuple[list, str]]) -> list[tuple[list, str]]:
    """One Single Domain experiment per domain, the first in the params file's order: a later one on a domain
    already covered (a registered claim's confirmatory runs, `confirm-single`) would count that domain twice."""
    kept: dict[str, tuple[list, str]] = {}
    for runs, domain in singles:
        kept.setdefault(domain, (runs, domain))
    return list(kept.values())


def _setting_arms(report: Report, model: str) -> dict[str, Arm]:
    """Mixed, S2PIAO and Single Domain arms of `model` at one budget (the S2PIAO run's, for the LM)."""
    s2piao = next((n for n, runs in report.experiments.items() if runs[0].setting == "s2piao"
                   and runs[0].has(model)), None)
    singles = [(runs, runs[0].domain) for runs in report.experiments.values()
               if runs[0].setting == "single_domain" and runs[0].has(model)]
    if model == "llmrec":
        anchor = report.first(s2piao) if s2piao else (singles[0][0][0] if singles else None)
        mixed = report.same_budget(anchor, "mixed") if anchor else None
        singles = [(runs, d) for runs, d in singles if anchor is None or lm_budget(runs[0]) == lm_budget(anchor)]
    else:
        mixed = report.baseline if report.baseline and report.first(report.baseline).has(model) else None
    arms = {}
    if mixed:
        arms["mixed"] = report.arm(mixed, model, f"Mixed (`{mixed}`)")
    if s2piao:
        arms["s2piao"] = report.arm(s2piao, model, f"S2PIAO (`{s2piao}`)")
    if singles:
        singles = first_per_domain(singles)  # after the budget filter: the first of a domain at this budget
        arms["single_domain"] = Arm(f"Single Domain ({len(singles)} models)", model, singles)
    return arms


def data_settings(report: Report) -> str:
    """Section: Single Domain, S2PIAO and Mixed compared for LLM-Rec and SASRec."""
    per_model = {m: _setting_arms(report, m) for m in ("llmrec", "sasrec")}
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
    for d in report.domains:
        rows.append([d] + [mean_sd(*(arms[s].summary("ndcg@10", in_domain(d))[:2]) if s in arms else (None, None))
                           for arms in per_model.values() for s in SETTINGS])
    out += ["**NDCG@10** per domain (test split; mean ± sd over seeds where there are several):", "",
            table(["domain", *(f"{MODEL_LABELS[m]} {SETTINGS[s]}" for m in per_model for s in SETTINGS)], rows), ""]
    panels = {MODEL_LABELS[m]: {SETTINGS[s]: [arms[s].summary("ndcg@10", in_domain(d))[0] if s in arms else None
                                              for d in report.domains] for s in SETTINGS}
              for m, arms in per_model.items()}
    out += [report.link(figures.grouped_bars(report.figure("data_settings.png"), report.domains, {}, "NDCG@10", "",
                                           panels=panels)), ""]
    pairs = []
    for m, arms in per_model.items():
        for other in ("single_domain", "s2piao"):
            if "mixed" not in arms or other not in arms:
                continue
            covered = sorted({d for _, d in arms[other].parts if d is not None})
            where = (lambda t, ds=covered: t["domain"].isin(ds)) if covered else None  # the domains both ran
            scope = f" ({', '.join(covered)})" if covered and len(covered) < len(report.domains) else ""
            pairs.append((f"{MODEL_LABELS[m]}: {arms['mixed'].label} vs {arms[other].label}{scope}", arms["mixed"],
                           arms[other], "ndcg@10", where))
    rows = report.comparison_rows(pairs)
    out += ["Pooled over the targets of the domains both arms cover (A minus B):", "",
            table(report.COMPARISON_COLUMNS, rows), ""]
    for row in rows:
        out.append(f"- {row[0]}: the paper's finding that one model trained on mixed cross-domain histories beats "
                   f"per-domain training **{said(row[-1])}** here (NDCG@10 {row[2]}, 95% CI {row[3]}).")
    return "\n".join(out)


def model_size(report: Report) -> str:
    """Section: model sizes (MiniLM, SmolLM2, random-init decoders) at equal budget."""
    rows, arms = [], {}
    for name, runs in report.experiments.items():
        run = runs[0]
        if run.setting != "mixed":
            continue
        backbone = (run.cost_eval.get("zero_shot") or run.cost_eval.get("llmrec") or {}).get("parameters_total")
        for model in ("zero_shot", "llmrec"):
            if run.has(model):
                arm = report.arm(name, model)
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
        rows = report.comparison_rows(pairs)
        out += [table(report.COMPARISON_COLUMNS, rows), ""]
        out += [f"- {r[0]}: the paper's finding that the larger LM recommends better **{said(r[-1])}** here." for r in rows]
    else:
        out.append("- Not compared: no two model sizes were trained with the same tuning, examples seen and "
                   "sentence length.")
    out += ["", *_size_cost(report)]
    return "\n".join(out)


def _size_cost(report: Report) -> list[str]:
    out = ["**Cost across sizes** (random-init OPT-style decoders, `make bench-model` section `sizes`; cost only):", ""]
    sweep = {k: v for k, v in report.bench.items() if k.startswith("sizes_")}
    if not sweep:
        return out + ["Not measured yet: `make bench-sizes`."]
    reference = report.first(report.tuned_mixed()[0]) if report.tuned_mixed() else None
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
    path = figures.scaling(report.figure("model_size_cost.png"), series, "parameters", "training samples/s",
                           "Training throughput by model size")
    return out + [report.link(path), ""]


def tuning(report: Report) -> str:
    """Section: FPFT against LoRA at equal budget, per model."""
    groups: dict[tuple, dict[str, str]] = {}
    for name in report.tuned_mixed():
        run = report.first(name)
        if run.params.train.logq_correction == report.base.train.logq_correction and not run.params.train.item_bank_negatives:
            groups.setdefault((run.model_name, lm_budget(run)), {}).setdefault(run.tuning, name)
    rows, pairs = [], []
    for (model, budget), pair in groups.items():
        for tuning, name in sorted(pair.items()):
            arm, c = report.arm(name, "llmrec"), report.first(name).cost_train
            rows.append([name, model, TUNINGS[tuning], budget_text(arm), c.get("parameters_trainable"), arm.seeds,
                         mean_sd(*arm.summary("ndcg@10")[:2]), mean_sd(*arm.summary("recall@10")[:2]),
                         report.best_rate(name), c.get("peak_gpu_mb") or c.get("peak_host_mb")])
        if {"fpft", "lora"} <= set(pair):
            pairs.append((pair["fpft"], pair["lora"]))
    out = ["FPFT and LoRA are paired only at an equal budget: same LM, optimizer steps, batch and sentence length.",
           "", table(["experiment", "model", "tuning", "budget", "trainable", "seeds", "NDCG@10", "Recall@10",
                      "train samples/s (fastest seed)", "peak MB"], rows) if rows else "No tuned runs yet.", ""]
    comparisons = [(f"FPFT (`{f}`) vs LoRA (`{lo}`)", report.arm(f, "llmrec"), report.arm(lo, "llmrec"), m, None)
                   for f, lo in pairs for m in ("ndcg@10", "recall@10")]
    result = report.comparison_rows(comparisons)
    if result:
        out += [table(report.COMPARISON_COLUMNS, result), ""]
    for f, lo in pairs:
        cf, cl = report.first(f).cost_train, report.first(lo).cost_train
        ci = compare(report.arm(f, "llmrec"), report.arm(lo, "llmrec"), "ndcg@10")
        if ci is None:
            continue
        out.append(f"- `{f}` vs `{lo}`: LoRA trains {cl['parameters_trainable'] / cf['parameters_trainable']:.2%} of "
                   f"the parameters at {report.best_rate(lo) / report.best_rate(f):.2f}× FPFT's samples/s (fastest seeds); the paper's "
                   f"finding that full fine-tuning beats LoRA **{said(ci.verdict)}** here (NDCG@10 {ci.text()}).")
    sweep = [r for k, v in report.bench.items() if k.startswith("sizes_") for r in v.values() if "tuning" in r
             and "error" not in r]
    by_model = {}
    for r in sweep:
        by_model.setdefault(r["model"], {})[r["tuning"]] = r
    ratios = [f"{m} {p['lora']['train_samples_per_s'] / p['fpft']['train_samples_per_s']:.2f}×"
              for m, p in by_model.items() if {"fpft", "lora"} <= set(p)]
    if ratios:
        out.append(f"- Size sweep, LoRA samples/s relative to FPFT: {', '.join(ratios)}.")
    return "\n".join(out)


def negatives(report: Report) -> str:
    """Section: the loss's levers (masking rated negatives, logQ, the item bank), each against the reference run."""
    ref_name = report.tuned_mixed()[0] if report.tuned_mixed() else None
    if ref_name is None:
        return "Not run."
    ref = report.first(ref_name)
    names = [n for n in report.tuned_mixed() if (report.first(n).model_name, report.first(n).tuning, lm_budget(report.first(n)))
             == (ref.model_name, ref.tuning, lm_budget(ref))]
    if len(names) < 2:
        return ("Not run: needs two Mixed-setting experiments of the same LM, tuning and budget that differ in their "
                "negatives (e.g. `train.logq_correction`, `train.item_bank_negatives`).")
    rows = []
    for n in names:
        arm = report.arm(n, "llmrec")
        rows.append([n, negatives_text(report.first(n).params.train), budget_text(arm), arm.seeds,
                     report.valid_ndcg(n), mean_sd(*arm.summary("ndcg@10")[:2]),
                     mean_sd(*arm.summary("ndcg@10", in_group("tail"))[:2])])
    out = [f"What each training row's softmax runs over, for the Mixed-setting `{ref.model_name}` "
           f"{TUNINGS[ref.tuning]} experiments at `{ref_name}`'s budget (test split; valid: the whole validation "
           f"split).", "", table(["experiment", "negatives", "budget", "seeds", "valid NDCG@10", "NDCG@10",
                                  "tail NDCG@10"], rows), ""]
    pairs = [(f"`{n}` vs `{ref_name}`", report.arm(n, "llmrec"), report.arm(ref_name, "llmrec"), "ndcg@10", None)
             for n in names[1:]]
    out.append(table(report.COMPARISON_COLUMNS, report.comparison_rows(pairs)))
    return "\n".join(out)

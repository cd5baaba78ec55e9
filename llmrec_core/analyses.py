"""Run the config's `experiments` (the analyses set): train, evaluate and index each run.

The experiment list in the params file is the one definition of the analyses; `llmrec report`
reads what these runs wrote. A run is up to date when its params, its prepared data and the source
code its results depend on (provenance.EXPERIMENT_CODE) are those its `experiment.json` records; a
stale run is rerun, and training resumes from a matching checkpoint (or is skipped when the weights
are still current), so an interrupted sweep continues where it stopped.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from .config import Params, load_params
from .data.layout import DataLayout
from .probe import probe_digest, probe_params, probes_agree, record_probe
from .provenance import (EARLIER_EXPERIMENT_CODES, EXPERIMENT_CODE, code_hash, code_hash_at, committed_code_hashes,
                         fingerprint, non_default, provenance)

STAMP = "experiment.json"


# What every model reads of `train`: the data setting (and the run's folder, which names the run).
SETTING_KEYS = frozenset({"setting", "domain", "run_dir"})


def experiment_config(params: Params) -> dict:
    """The params that decide an experiment's results (their non-default values): `prepare` and `eval`, the data
    setting, and the sections its models read -- `train` whole only when the LM is fine-tuned (for `llmrec`, or
    for a head over the tuned LM), `model` when an LM encodes, a head's section when that head runs. So a change
    to the base config's `seqhead` section stales the runs of the sequence head, not those of the LM alone."""
    models = set(params.eval.models)
    tunes_lm = "llmrec" in models or ("seqhead" in models and params.seqhead.item_vectors == "tuned")
    train = non_default(params.train)
    config = {"prepare": non_default(params.prepare), "eval": non_default(params.eval),
              "train": train if tunes_lm else {key: value for key, value in train.items() if key in SETTING_KEYS}}
    if models & {"llmrec", "zero_shot", "seqhead"}:
        config["model"] = non_default(params.model)
    for head in ("sasrec", "seqhead"):
        if head in models:
            config[head] = non_default(getattr(params, head))
    return config


def legacy_experiment_config(params: Params) -> dict:
    """`experiment_config` as it first was: every section, whatever the run's models. `restamp` carries a run
    stamped with it over to today's definition when these params still give its recorded fingerprint."""
    return {section: non_default(getattr(params, section))
            for section in ("prepare", "model", "train", "sasrec", "seqhead", "eval")}


def experiment_fingerprint(params: Params) -> str:
    """Params, prepared data and the source code behind an experiment's results."""
    return fingerprint(experiment_config(params), DataLayout(params.data_root).prepared / "manifest.json",
                       EXPERIMENT_CODE)


def run_folder(params: Params) -> Path:
    """The run's folder (`train.run_dir`, resolved)."""
    return params.resolve(params.train.run_dir)


def read_stamp(params: Params) -> dict | None:
    """The run's experiment.json (what `run_experiment` wrote when it finished), or None."""
    stamp = run_folder(params) / STAMP
    return json.loads(stamp.read_text()) if stamp.is_file() else None


def run_status(params: Params) -> tuple[str, str]:
    """("current" | "stale" | "not run", why) for the run these params describe."""
    stamp = read_stamp(params)
    if stamp is None:
        if (run_folder(params) / "metrics_test.json").is_file():
            return "unstamped", "made outside `llmrec analyses` (dvc repro or the CLI): no experiment.json"
        return "not run", "no experiment.json"
    if stamp.get("fingerprint") == experiment_fingerprint(params):
        return "current", f"commit {((stamp.get('provenance') or {}).get('commit') or '?')[:12]}"
    recorded = stamp.get("provenance") or {}
    if recorded.get("code_hash") != code_hash(EXPERIMENT_CODE):
        return "stale", (f"code changed since commit {(recorded.get('commit') or '?')[:12]} "
                         f"(llmrec_core/{{{','.join(EXPERIMENT_CODE)}}})")
    return "stale", "params or prepared data changed"


def is_current(params: Params) -> bool:
    """Whether the run these params describe finished with the same params, data and code."""
    return run_status(params)[0] == "current"


def ensure_own_data(params: Params, name: str, log: Callable[[str], None]) -> None:
    """An experiment with its own `data.root` (e.g. the new-item setting's time split) gets its data stages run
    here when that root has no prepared data, or data prepared with another `prepare.time_split`."""
    from .data.ingest import ingest
    from .data.prepare import prepare
    from .data.validate import validate

    manifest = DataLayout(params.data_root).prepared / "manifest.json"
    wanted = params.prepare.time_split.record() if params.prepare.time_split else None
    if manifest.is_file() and (json.loads(manifest.read_text()).get("time_split") or {}).get("config") == wanted:
        return
    log(f"{name}: preparing its own data in {params.data_root} (ingest, validate, prepare)")
    ingest(params)
    validate(params)
    prepare(params)


def fresh_accelerator_state() -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another mixed precision;
    runs of one sweep may differ in it (e.g. fp32 runs, then a bf16 GPU run). The distributed state is kept."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def train_models(params: Params, name: str, log: Callable[[str], None], show_progress: bool = True) -> None:
    """Train what `eval.models` needs (the LM, the sequence head, SASRec), resuming matching checkpoints. A
    sequence head over the fine-tuned LM (`seqhead.item_vectors: tuned`) needs the LM first."""
    from .train.loop import train
    from .train.sasrec import train_sasrec

    models = tuple(params.eval.models)
    if "llmrec" in models or ("seqhead" in models and params.seqhead.item_vectors == "tuned"):
        log(f"{name}: training LLM-Rec ({params.model.name_or_path}, {params.train.tuning}, {params.train.setting})")
        fresh_accelerator_state()
        train(params, resume="auto", show_progress=show_progress)
    for head in ("seqhead", "sasrec"):
        if head in models:
            log(f"{name}: training {head} ({params.train.setting})")
            train_sasrec(params, resume="auto", show_progress=False, head=head)


def run_experiment(path: Path, name: str, force: bool = False, log: Callable[[str], None] = print,
                   index: bool = True) -> dict:
    """Train what the run's `eval.models` needs, evaluate on the test split, index the items with each of its
    models that serves, the LM and the sequence head (unless `index` is False: the index is for serving, and no
    result depends on it)."""
    from .evaluate.run import evaluate

    params = load_params(path, experiment=name)
    run_dir = run_folder(params)
    if params.data_root != load_params(path).data_root:
        ensure_own_data(params, name, log)
    elif not (DataLayout(params.data_root).prepared / "manifest.json").is_file():
        raise FileNotFoundError(f"{params.data_root}: no prepared data; run ingest, validate and prepare "
                                f"with --params {path} first")
    status, why = run_status(params)
    if not force and status == "current":
        log(f"{name}: up to date in {run_dir}")
        return read_stamp(params)
    if status == "stale":
        log(f"{name}: stale ({why}); rerunning")
    models = tuple(params.eval.models)
    started = time.perf_counter()
    train_models(params, name, log)
    log(f"{name}: evaluating {', '.join(models)}")
    evaluate(params, models, "test")
    tuned = tuple(m for m in ("llmrec", "seqhead") if m in models)
    if tuned:  # the whole validation split, on which the report chooses its headline runs
        evaluate(params, tuned, "valid")
    if index:  # a serving index for each model the run trained that can serve (the report reads the LM's)
        from .serve.recommend import build_index

        for served in (m for m in ("llmrec", "seqhead") if m in models):
            build_index(load_params(path, [f"index.model={served}"], name))
    stamp = {"name": name, "fingerprint": experiment_fingerprint(params), "models": list(models),
             "seed": params.train.seed, "provenance": provenance(EXPERIMENT_CODE),
             "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.perf_counter() - started, 1)}
    (run_dir / STAMP).write_text(json.dumps(stamp, indent=2))
    return stamp


def restamp(params: Params) -> tuple[str, str]:
    """Carry a finished run over a change of its code or of what counts as its code (provenance.EXPERIMENT_CODE),
    without rerunning it, when it is proven not to change its results: the recorded code hash is that of its
    scope at the recorded commit (so the run was made from that commit's code), its fingerprint with that hash is
    today's (same params and prepared data), and every file of today's scope is the same at that commit as in this
    tree -- or, where the code changed, probes made with the old and the new code agree (probe.py). A fingerprint
    taken the first way (`legacy_experiment_config`) counts as today's params when these params still give it.
    Returns (outcome, why); outcome is "restamped", "current" or "kept stale"."""
    status, _ = run_status(params)
    stamp = read_stamp(params)
    if status != "stale" or stamp is None:
        return status, "nothing to carry over"
    recorded = stamp.get("provenance") or {}
    commit, old_hash = recorded.get("commit"), recorded.get("code_hash")
    if not _recorded_code_was_committed(stamp):
        return "kept stale", f"its code hash is not that of commit {str(commit)[:12]} (uncommitted code?)"
    manifest = DataLayout(params.data_root).prepared / "manifest.json"
    matches = [how for how, config in (("", experiment_config(params)),
                                       (" (its fingerprint took every section, as it first did)",
                                        legacy_experiment_config(params)))
               if stamp.get("fingerprint") == fingerprint(config, manifest, code=old_hash)]
    if not matches:
        return "kept stale", "params or prepared data changed"
    run_dir, new_hash = run_folder(params), code_hash(EXPERIMENT_CODE)
    carried_by, why = "git", f"code of commit {commit[:12]} is today's in llmrec_core/{{{','.join(EXPERIMENT_CODE)}}}"
    if old_hash == new_hash:  # the code it records is today's: only the fingerprint's definition changed
        carried_by, why = "fingerprint", f"same params, prepared data and code{matches[0]}"
    elif code_hash_at(commit, EXPERIMENT_CODE) != new_hash:
        agree, why = probes_agree(run_dir, old_hash, new_hash)
        if not agree:
            return "kept stale", f"code changed since commit {commit[:12]}; {why}"
        carried_by = "probe"
    earlier = ([stamp["restamped"]] + stamp["restamped"].pop("earlier", [])) if stamp.get("restamped") else []
    stamp["restamped"] = {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "code_hash": old_hash, "by": carried_by,
                          "why": why, "code_scope": recorded.get("code_scope"), "fingerprint": stamp["fingerprint"],
                          **({"earlier": earlier} if earlier else {})}
    stamp["fingerprint"] = experiment_fingerprint(params)
    stamp["provenance"] = {**recorded, "code_hash": new_hash, "code_scope": list(EXPERIMENT_CODE)}
    (run_dir / STAMP).write_text(json.dumps(stamp, indent=2))
    return "restamped", why


def _recorded_code_was_committed(stamp: dict) -> bool:
    """Whether the stamp's code hash is that of committed code: its scope at the recorded commit, or, for a run
    carried over before (whose hash is that of the code it was carried to), at a later commit."""
    recorded = stamp.get("provenance") or {}
    commit, old_hash = recorded.get("commit"), recorded.get("code_hash")
    if not commit or not old_hash:
        return False
    scopes = [tuple(recorded["code_scope"])] if recorded.get("code_scope") else list(EARLIER_EXPERIMENT_CODES)
    if any(code_hash_at(commit, scope) == old_hash for scope in scopes):
        return True
    return bool(stamp.get("restamped")) and old_hash in committed_code_hashes(commit, EXPERIMENT_CODE)


def restamp_runs(path: Path, names: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(run, outcome, why) of `restamp` for each run; rewrites the experiment.json of those carried over."""
    return [(run, *restamp(load_params(path, experiment=run))) for run in select_runs(load_params(path), names)]


def select_runs(params: Params, names: list[str] | None) -> list[str]:
    """The runs to do: all, or those named (an experiment name selects all of its seeds)."""
    runs = params.run_names()
    if not names:
        return runs
    known = {e.name for e in params.experiments} | set(runs)
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; the params file has: {', '.join(runs)}")
    experiment_of = {run: e.name for e in params.experiments for run in e.run_names}
    return [r for r in runs if r in names or experiment_of[r] in names]


def analyses_status(path: Path, names: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(run, status, why) for each run, without running anything."""
    return [(run, *run_status(load_params(path, experiment=run))) for run in select_runs(load_params(path), names)]


def run_analyses(path: Path, names: list[str] | None = None, force: bool = False,
                 log: Callable[[str], None] = print, index: bool = True) -> list[dict]:
    """Run every run of the params file's experiments (or those `names` select) that is not current: reads the
    prepared data, writes each run's folder; returns the stamps."""
    return [run_experiment(path, run, force, log, index) for run in select_runs(load_params(path), names)]


def run_probe(params: Params, log: Callable[[str], None] = print) -> tuple[str, dict]:
    """Train and evaluate (valid split) what probe params name, in their scratch folder; (digest, NDCG@10s)."""
    from .evaluate.run import evaluate

    scratch = run_folder(params)
    shutil.rmtree(scratch, ignore_errors=True)
    if not (DataLayout(params.data_root).prepared / "manifest.json").is_file():
        ensure_own_data(params, scratch.parent.name, log)
    try:
        train_models(params, scratch.parent.name, log, show_progress=False)
        evaluate(params, tuple(params.eval.models), "valid")
        return probe_digest(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def probe_runs(path: Path, names: list[str] | None = None,
               log: Callable[[str], None] = print) -> list[tuple[str, str, str]]:
    """Probe each selected experiment (its first run; seeds choose random draws, not code paths) with the code in
    this tree and record it in every run of the experiment (probe.py). Returns (experiment, digest, NDCG@10s)."""
    params = load_params(path)
    selected = set(select_runs(params, names))
    out = []
    for experiment in params.experiments:
        runs = [r for r in experiment.run_names if r in selected]
        if not runs:
            continue
        started = time.perf_counter()
        digest, readable = run_probe(probe_params(path, runs[0]), log)
        run_dirs = [run_folder(load_params(path, experiment=r)) for r in runs]
        record = record_probe(run_dirs, digest, readable, runs[0], time.perf_counter() - started)
        log(f"{experiment.name}: probe {digest} in {record['seconds']} s")
        out.append((experiment.name, digest, json.dumps(readable)))
    return out

"""Run the config's `experiments` (the analyses set): train, evaluate and index each run.

The experiment list in the params file is the one definition of the analyses; `llmrec-lab report`
reads what these runs wrote. Each finished run leaves an `experiment.json` (its stamp): a fingerprint of
its params, its prepared data and the product code its results depend on (provenance.EXPERIMENT_CODE),
and the commit that code came from. A run is

- current: params, data and code are those the stamp records;
- earlier code: params and data are those recorded, the code behind the results changed since the
  commit the stamp names; its results stand for that commit's code, the report says so, and
  `--rerun-earlier-code` reruns it;
- stale: params or prepared data changed; `llmrec-lab analyses` reruns it.

Training resumes from a matching checkpoint (or is skipped when the weights are still current), so an
interrupted sweep continues where it stopped.

DVC cannot answer "which runs are stale" here: these runs are entries of a params file's `experiments`,
not stages of dvc.yaml, and their records are committed without DVC's cache.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from llmrec_core.config import Params, load_params
from llmrec_core.data.layout import DataLayout
from llmrec_core.provenance import EXPERIMENT_CODE, fingerprint, non_default, provenance

STAMP = "experiment.json"


# What every model reads of `train`: the data setting (and the run's folder, which names the run).
SETTING_KEYS = frozenset({"setting", "domain", "run_dir"})


def experiment_config(params: Params) -> dict:
    """The params that decide an experiment's results (their non-default values): `prepare` and `eval`, the data
    setting, and the sections its models read -- `train` whole only when the LM is fine-tuned (for `llmrec`, or
    for a head over the tuned LM), `model` when an LM encodes, a head's section when that head runs. So a change
    to the base config's `seqhead` section stales the runs of the sequence head, not those of the LM alone."""
    served = "seqhead_served" in params.eval.models  # the head as it serves: its section and the index's offset
    models = set(params.eval.models) | ({"seqhead"} if served else set())
    tunes_lm = "llmrec" in models or ("seqhead" in models and params.seqhead.item_vectors == "tuned")
    train = non_default(params.train)
    config = {"prepare": non_default(params.prepare), "eval": non_default(params.eval),
              "train": train if tunes_lm else {key: value for key, value in train.items() if key in SETTING_KEYS}}
    if models & {"llmrec", "zero_shot", "seqhead"}:
        config["model"] = non_default(params.model)
    for head in ("sasrec", "seqhead"):
        if head in models:
            config[head] = non_default(getattr(params, head))
    if served:
        config["index"] = non_default(params.index)
    return config


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
    """("current" | "earlier code" | "stale" | "not run" | "unstamped", why) for the run these params describe."""
    stamp = read_stamp(params)
    if stamp is None:
        if (run_folder(params) / "metrics_test.json").is_file():
            return "unstamped", "made outside `llmrec-lab analyses` (dvc repro or the CLI): no experiment.json"
        return "not run", "no experiment.json"
    recorded = stamp.get("provenance") or {}
    commit = (recorded.get("commit") or "?")[:12]
    if _carried_by_probe(stamp):
        return "earlier code", (f"its code hash was carried over by a behaviour probe (retired): the code that made it "
                                f"is older than commit {commit}'s")
    if stamp.get("fingerprint") == experiment_fingerprint(params):
        return "current", f"commit {commit}"
    manifest = DataLayout(params.data_root).prepared / "manifest.json"
    old_code = recorded.get("code_hash")
    if not old_code or stamp.get("fingerprint") != fingerprint(experiment_config(params), manifest, code=old_code):
        return "stale", "params or prepared data changed"
    return "earlier code", (f"made with the code of commit {commit}; llmrec_core/{{{','.join(EXPERIMENT_CODE)}}} "
                            "changed since")


def _carried_by_probe(stamp: dict) -> bool:
    """Whether a restamp in the run's history moved its code hash forward on a probe's word (not a rerun)."""
    restamped = stamp.get("restamped") or {}
    return any(entry.get("by") == "probe" for entry in [restamped, *restamped.get("earlier", [])])


def is_current(params: Params) -> bool:
    """Whether the run these params describe finished with the same params, data and code."""
    return run_status(params)[0] == "current"


def has_results(params: Params) -> bool:
    """Whether the run's results describe these params and data (with today's code or an earlier commit's)."""
    return run_status(params)[0] in ("current", "earlier code")


def ensure_own_data(params: Params, name: str, log: Callable[[str], None]) -> None:
    """An experiment with its own `data.root` (e.g. the new-item setting's time split) gets its data stages run
    here when that root has no prepared data, or data prepared with another `prepare.time_split`."""
    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.prepare import prepare
    from llmrec_core.data.validate import validate

    manifest = DataLayout(params.data_root).prepared / "manifest.json"
    wanted = params.prepare.time_split.record() if params.prepare.time_split else None
    if manifest.is_file() and (json.loads(manifest.read_text()).get("time_split") or {}).get("config") == wanted:
        return
    log(f"{name}: preparing its own data in {params.data_root} (ingest, validate, prepare)")
    ingest(params)
    validate(params)
    prepare(params)


def data_roots(path: Path) -> dict[Path, str]:
    """Every data root the params file's runs read (its own and each experiment's), with the first run using it
    ("" for the params file's own)."""
    base = load_params(path)
    roots: dict[Path, str] = {base.data_root: ""}
    for run in base.run_names():
        roots.setdefault(load_params(path, experiment=run).data_root, run)
    return roots


def unprepared_roots(path: Path) -> list[Path]:
    """The data roots of `data_roots` with no prepared data here (a fresh clone has none: they are not versioned
    in git, and the report reads each run's split from them)."""
    return [root for root in data_roots(path) if not (DataLayout(root).prepared / "manifest.json").is_file()]


def prepare_data(path: Path, log: Callable[[str], None] = print) -> list[Path]:
    """`ensure_own_data` for every data root of the params file (its own included): the data stages where none are
    prepared, or were prepared with another time split; returns the roots it prepared."""
    done = []
    for root, run in data_roots(path).items():
        manifest = DataLayout(root).prepared / "manifest.json"
        before = manifest.read_bytes() if manifest.is_file() else None
        ensure_own_data(load_params(path, experiment=run or None), run or str(path), log)
        if not manifest.is_file() or manifest.read_bytes() != before:
            done.append(root)
    return done


def fresh_accelerator_state() -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another mixed precision;
    runs of one sweep may differ in it (e.g. fp32 runs, then a bf16 GPU run). The distributed state is kept."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def train_models(params: Params, name: str, log: Callable[[str], None], show_progress: bool = True) -> None:
    """Train what `eval.models` needs (the LM, the sequence head, SASRec), resuming matching checkpoints. A
    sequence head over the fine-tuned LM (`seqhead.item_vectors: tuned`) needs the LM first."""
    from llmrec_core.train.loop import train
    from llmrec_core.train.sequence import train_sasrec

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
                   index: bool = True, rerun_earlier_code: bool = False) -> dict:
    """Train what the run's `eval.models` needs, evaluate on the test split, index the items with each of its
    models that serves, the LM and the sequence head (unless `index` is False: the index is for serving, and no
    result depends on it). A current run is kept, and so is a run made with earlier code unless
    `rerun_earlier_code`; `force` reruns any run."""
    from llmrec_core.evaluate.run import evaluate

    params = load_params(path, experiment=name)
    run_dir = run_folder(params)
    if params.data_root != load_params(path).data_root:
        ensure_own_data(params, name, log)
    elif not (DataLayout(params.data_root).prepared / "manifest.json").is_file():
        raise FileNotFoundError(f"{params.data_root}: no prepared data; run `llmrec-lab prepare-data --params "
                                f"{path}` (or ingest, validate and prepare with --params {path}) first")
    status, why = run_status(params)
    if not force and status == "current":
        log(f"{name}: up to date in {run_dir}")
        return read_stamp(params)
    if not force and status == "earlier code" and not rerun_earlier_code:
        log(f"{name}: kept, {why} (--rerun-earlier-code reruns it)")
        return read_stamp(params)
    if status in ("stale", "earlier code"):
        log(f"{name}: stale ({why}); rerunning")
    models = tuple(params.eval.models)
    started = time.perf_counter()
    train_models(params, name, log)
    log(f"{name}: evaluating {', '.join(models)}")
    evaluate(params, models, "test")
    # every model on the validation split too (eval.max_valid_users of it), on which configurations are chosen
    evaluate(params, models, "valid")
    if index:  # a serving index for each model the run trained that can serve (the report reads the LM's)
        from llmrec_core.serve.recommend import build_index

        for served in (m for m in ("llmrec", "seqhead") if m in models):
            build_index(load_params(path, [f"index.model={served}"], name))
    stamp = {"name": name, "fingerprint": experiment_fingerprint(params), "models": list(models),
             "seed": params.train.seed, "provenance": provenance(EXPERIMENT_CODE),
             "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.perf_counter() - started, 1)}
    (run_dir / STAMP).write_text(json.dumps(stamp, indent=2))
    return stamp


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
                 log: Callable[[str], None] = print, index: bool = True, rerun_earlier_code: bool = False) -> list[dict]:
    """Run every run of the params file's experiments (or those `names` select) that is not current (see
    `run_experiment`): reads the prepared data, writes each run's folder; returns the stamps."""
    return [run_experiment(path, run, force, log, index, rerun_earlier_code)
            for run in select_runs(load_params(path), names)]

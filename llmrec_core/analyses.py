"""Run the config's `experiments` (the analyses set): train, evaluate and index each one.

The experiment list in the params file is the one definition of the analyses; `llmrec report`
reads what these runs wrote. An experiment whose params and data have not changed since it last
finished is skipped, and training resumes from a matching checkpoint, so an interrupted sweep
continues where it stopped.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from .config import Params, load_params
from .data.layout import DataLayout
from .train.checkpoint import fingerprint

STAMP = "experiment.json"


def experiment_fingerprint(params: Params) -> str:
    # values left at their defaults are not part of it, so a new option does not make finished runs stale
    config = {section: getattr(params, section).model_dump(mode="json", exclude_defaults=True)
              for section in ("prepare", "model", "train", "sasrec", "eval")}
    return fingerprint(config, DataLayout(params.data_root).prepared / "manifest.json")


def is_current(params: Params) -> bool:
    stamp = params.resolve(params.train.run_dir) / STAMP
    return stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == experiment_fingerprint(params)


def run_experiment(path: Path, name: str, force: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train what the experiment's `eval.models` needs, evaluate on the test split, index the items."""
    from .baselines.sasrec import train_sasrec
    from .evaluate.run import evaluate
    from .serve.recommend import build_index
    from .train.loop import train

    params = load_params(path, experiment=name)
    run_dir = params.resolve(params.train.run_dir)
    if not (DataLayout(params.data_root).prepared / "manifest.json").is_file():
        raise FileNotFoundError(f"{params.data_root}: no prepared data; run ingest, validate and prepare "
                                f"with --params {path} first")
    if not force and is_current(params):
        log(f"{name}: up to date in {run_dir}")
        return json.loads((run_dir / STAMP).read_text())
    models = tuple(params.eval.models)
    started = time.perf_counter()
    if "llmrec" in models:
        log(f"{name}: training LLM-Rec ({params.model.name_or_path}, {params.train.tuning}, {params.train.setting})")
        train(params, resume="auto")
    if "sasrec" in models:
        log(f"{name}: training SASRec ({params.train.setting})")
        train_sasrec(params, resume="auto", show_progress=False)
    log(f"{name}: evaluating {', '.join(models)}")
    evaluate(params, models, "test")
    if "llmrec" in models:  # the whole validation split, on which the report chooses its headline run
        evaluate(params, ("llmrec",), "valid")
    if "llmrec" in models:
        build_index(params)
    stamp = {"name": name, "fingerprint": experiment_fingerprint(params), "models": list(models),
             "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.perf_counter() - started, 1)}
    (run_dir / STAMP).write_text(json.dumps(stamp, indent=2))
    return stamp


def run_analyses(path: Path, names: list[str] | None = None, force: bool = False,
                 log: Callable[[str], None] = print) -> list[dict]:
    params = load_params(path)
    known = [e.name for e in params.experiments]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; {path} has: {', '.join(known)}")
    return [run_experiment(path, name, force, log) for name in known if not names or name in names]

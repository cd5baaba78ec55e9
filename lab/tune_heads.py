"""Tune SASRec's or the sequence head's few knobs on the validation split; freeze the winner in the params file.

Trains one model per grid point (the setting and data of the base config, or of one experiment's run with
`--experiment`; early stopping as configured), evaluates each on the whole validation split, and writes every
point with its validation NDCG@10 to `<report.benchmarks_dir>/<model>_tuning.json`; the report shows that table
beside the values in use. The test split is never read.

    llmrec-lab tune-heads --params configs/ml-100k.yaml                      # SASRec (sasrec_tuning.json)
    llmrec-lab tune-heads --params configs/ml-100k.yaml --model seqhead \\
        --experiment seqhead-tuned-lm.seed0                                         # the head over that run's LM
    ... --grid seqhead.logit_adjustment=0,0.5,1   # another grid (seqhead_tuning_logit_adjustment.json)
    ... --missing-only   # finish an interrupted grid
    ... --grid model.pretrained_mix=0,0.25,0.5   # the head over its LM mixed back toward pre-trained (WiSE-FT)

A head that reads the fine-tuned LM (`seqhead.item_vectors: tuned`) reads the LM the experiment's run trained
(run it first with `llmrec-lab analyses --only ...`): every grid point links those weights, so the LM is trained once.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

from llmrec_core.config import Params, load_params
from llmrec_core.errors import UserError
from llmrec_core.evaluate.run import evaluate
from llmrec_core.evaluate.trained import lm_weights_path
from llmrec_core.train.sequence import train_sasrec

# Both models get the same first grid (width x dropout); lr: the params file's (RecBole: 1e-3).
GRIDS = {"sasrec": {"sasrec.hidden": [64, 128, 256], "sasrec.dropout": [0.2, 0.5]},
         "seqhead": {"seqhead.hidden": [64, 128, 256], "seqhead.dropout": [0.2, 0.5]}}

# The head's knobs were chosen by this sequence of validation grids, each on top of the best point of the ones
# before (REPORT.md's tuning tables); `--search` gives a model the same sequence and the same rule (the highest
# validation NDCG@10), so the models a claim compares get equal tuning budgets. SASRec also gets lr, which the
# head never had: the opponent gets at least the head's budget.
SEARCH = {"sasrec": [{"sasrec.hidden": [64, 128, 256], "sasrec.dropout": [0.2, 0.5]},
                     {"sasrec.logit_adjustment": [0, 0.1, 0.25, 0.5, 1.0]},
                     {"sasrec.max_len": [50, 100, 200]},
                     {"sasrec.lr": [5e-4, 1e-3, 2e-3]}],
          "seqhead": [{"seqhead.hidden": [64, 128, 256], "seqhead.dropout": [0.2, 0.5]},
                      {"seqhead.logit_adjustment": [0, 0.1, 0.25, 0.5, 1.0]},
                      {"seqhead.max_len": [50, 100, 200]}]}


def search(params_path: Path, model: str = "sasrec", experiment: str | None = None, runs: Path | None = None,
           fixed: list[str] = (), log: Callable[[str], None] = print) -> dict:
    """Run `model`'s SEARCH: each grid on top of the best point of the grids before (as `--set` overrides), every
    grid written to its own tuning file, finished points kept (rerun to resume). Returns the chosen values."""
    if model not in SEARCH:
        raise UserError(f"--model {model!r}: one of {', '.join(sorted(SEARCH))}")
    base = load_params(params_path, list(fixed), experiment=experiment)
    defaults = {k: getattr(getattr(base, k.split(".")[0]), k.split(".")[1]) for stage in SEARCH[model] for k in stage}
    chosen: dict = {}
    seen: dict[tuple, dict] = {}

    def earlier(setting: dict) -> dict | None:
        return seen.get(_key({**defaults, **{k: v for k, v in setting.items() if k in defaults}}))

    for stage in SEARCH[model]:
        options = [f"{k}={','.join(format(v, 'g') for v in values)}" for k, values in stage.items()]
        stage_fixed = [*fixed, *(f"{k}={v}" for k, v in chosen.items())]
        points = tune_heads(params_path, model, experiment, runs, stage_fixed, options, missing_only=True, log=log,
                            known=earlier)
        best = _best(points)
        chosen.update({k: best[k] for k in stage})
        for point in points:
            seen[_key({**defaults, **chosen, **{k: point[k] for k in stage}})] = point
        log(f"search: after {', '.join(stage)}: {chosen}")
    return chosen


def _key(setting: dict) -> tuple:
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in setting.items()))


def tune_heads(params_path: Path, model: str = "sasrec", experiment: str | None = None, runs: Path | None = None,
               fixed: list[str] = (), grid_options: list[str] = (), missing_only: bool = False,
               log: Callable[[str], None] = print, known: Callable[[dict], dict | None] | None = None) -> list[dict]:
    """Train and validate `model` at every point of its grid (GRIDS, or `grid_options` "KEY=V1,V2,..."), on the
    base config or on top of run `experiment`, with `fixed` overrides at every point; the grid's runs go to `runs`
    (default: beside train.run_dir). Writes the tuning file after every point; `missing_only` keeps the points it
    already holds; `known` gives the point an earlier grid of a search trained with the same values (the fixed
    ones and the grid's), which is copied rather than retrained. Returns the points."""
    if model not in GRIDS:
        raise UserError(f"--model {model!r}: one of {', '.join(sorted(GRIDS))}")
    fixed = list(fixed)
    grid = _grid(model, list(grid_options))
    out = f"{model}_tuning" + ("".join(f"_{k.split('.')[1]}" for k in grid) if grid_options else "")
    base = load_params(params_path, fixed, experiment=experiment)
    runs = (runs or base.resolve(base.train.run_dir).parent / f"{model}-tuning").resolve()
    recorded = _recorded(base, out, experiment, fixed) if missing_only else []
    points, total = list(recorded), len(list(itertools.product(*grid.values())))
    record = {"params": str(params_path), "model": model, "experiment": experiment, "fixed": fixed,
              "split": "valid (whole split)", "grid": grid, "points_total": total}
    in_names = [option.split(".", 1)[-1].replace("=", "") for option in fixed]  # in the points' folder names
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        if any(all(p.get(k) == v for k, v in setting.items()) for p in points):
            log(f"{setting}: recorded in {out}.json, kept")
            continue
        same = known({**_parsed(fixed), **setting}) if known else None
        if same is not None:
            points.append({**setting, **{k: v for k, v in same.items() if "." not in k}})
            log(f"{setting}: the same run as an earlier grid's point, copied")
            _write(_path(base, out), {**record, "points": points})
            continue
        name = "-".join([*in_names, *(f"{k.split('.')[1]}{v if isinstance(v, str) else format(v, 'g')}"
                                      for k, v in setting.items())])
        overrides = [*fixed, *(f"{k}={v}" for k, v in setting.items()),
                     f"{model}.run_dir={runs / name / model}", f"train.run_dir={runs / name}"]
        params = load_params(params_path, overrides, experiment=experiment)
        if model == "seqhead" and params.seqhead.item_vectors == "tuned":
            _link_lm(base, params)
        started = time.perf_counter()
        summary = train_sasrec(params, resume="auto", show_progress=False, head=model)
        result = evaluate(params, (model,), "valid")["models"][model]
        valid, tail = result["overall"], result.get("by_group", {}).get("tail", {})
        cfg = getattr(params, model)
        point = {**setting, "max_len": cfg.max_len, "layers": cfg.layers,
                 "epochs_run": summary["cost"]["epochs_run"], "valid_ndcg@10": valid["ndcg@10"],
                 "valid_recall@10": valid["recall@10"], "valid_tail_ndcg@10": tail.get("ndcg@10"),
                 "seconds": round(time.perf_counter() - started, 1), "device": _device()}
        points.append(point)
        log(json.dumps(point))
        _write(_path(base, out), {**record, "points": points})  # after every point: an interrupted grid keeps them
    if points:
        log(f"best on validation: {_best(points)}")
    return points


def _grid(model: str, given: list[str]) -> dict[str, list]:
    """The default grid of `model`, or the one `--grid KEY=V1,V2` options give (keys of the model's section; the
    head also takes `model.pretrained_mix`, which moves the LM whose title vectors it reads)."""
    if not given:
        return GRIDS[model]
    grid = {}
    for option in given:
        key, _, values = option.partition("=")
        allowed = key.startswith(f"{model}.") or (model == "seqhead" and key == "model.pretrained_mix")
        if not allowed or not values:
            also = " or model.pretrained_mix=<v1>,<v2>,..." if model == "seqhead" else ""
            raise UserError(f"--grid {option!r}: expected {model}.<key>=<v1>,<v2>,...{also}")
        grid[key] = [_number(v) for v in values.split(",")]
    return grid


def _parsed(options: list[str]) -> dict:
    """`KEY=VALUE` overrides as a dict of numbers (or text)."""
    return {k: _number(v) for k, _, v in (o.partition("=") for o in options)}


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU {platform.machine()}"


def _number(text: str) -> int | float | str:
    """A grid value as YAML would read it: an int, a float, or else the text (the config validates it)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _link_lm(base: Params, point: Params) -> None:
    """The experiment run's fine-tuned LM, hard-linked (or copied) into the grid point's run folder."""
    source, target = lm_weights_path(base), lm_weights_path(point)
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: train the experiment's LM first (`llmrec-lab analyses --only ...`)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            target.write_bytes(source.read_bytes())


def _path(base: Params, stem: str) -> Path:
    return base.resolve(base.report.benchmarks_dir) / f"{stem}.json"


def _recorded(base: Params, stem: str, experiment: str | None, fixed: list[str]) -> list[dict]:
    """The points of an earlier (possibly interrupted) grid on the same base, from the tuning file."""
    path = _path(base, stem)
    if not path.is_file():
        return []
    found = json.loads(path.read_text())
    return found["points"] if found.get("experiment") == experiment and found.get("fixed", []) == fixed else []


def _best(points: list[dict]) -> dict:
    return max(points, key=lambda p: p["valid_ndcg@10"])


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, "best": _best(record["points"]),
                                "machine": {"machine": f"CPU {platform.machine()}", "cpu_threads": os.cpu_count(),
                                            "load_1min": round(os.getloadavg()[0], 2),
                                            "date": time.strftime("%Y-%m-%d")}},
                               indent=2))

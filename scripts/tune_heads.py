"""Tune SASRec's or the sequence head's few knobs on the validation split; freeze the winner in the params file.

Trains one model per grid point (the setting and data of the base config, or of one experiment's run with
`--experiment`; early stopping as configured), evaluates each on the whole validation split, and writes every
point with its validation NDCG@10 to `<report.benchmarks_dir>/<model>_tuning.json`; the report shows that table
beside the values in use. The test split is never read.

    python scripts/tune_heads.py --params configs/ml-100k.yaml                      # SASRec (sasrec_tuning.json)
    python scripts/tune_heads.py --params configs/ml-100k.yaml --model seqhead \\
        --experiment seqhead-tuned-lm.seed0                                         # the head over that run's LM
    ... --grid seqhead.logit_adjustment=0,0.5,1   # another grid (seqhead_tuning_logit_adjustment.json)
    ... --missing-only   # finish an interrupted grid
    ... --grid model.pretrained_mix=0,0.25,0.5   # the head over its LM mixed back toward pre-trained (WiSE-FT)

A head that reads the fine-tuned LM (`seqhead.item_vectors: tuned`) reads the LM the experiment's run trained
(run it first with `llmrec analyses --only ...`): every grid point links those weights, so the LM is trained once.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

from llmrec_core.config import Params, load_params
from llmrec_core.evaluate.run import evaluate
from llmrec_core.model.bundle import lm_weights_path
from llmrec_core.train.sasrec import train_sasrec

# lr: the params file's (RecBole: 1e-3). The head also tries a wider projection of the 384-d title vectors.
GRIDS = {"sasrec": {"sasrec.hidden": [64, 128], "sasrec.dropout": [0.2, 0.5]},
         "seqhead": {"seqhead.hidden": [64, 128, 256], "seqhead.dropout": [0.2, 0.5]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", choices=sorted(GRIDS), default="sasrec")
    parser.add_argument("--experiment", default=None,
                        help="tune on top of this run of `experiments` (e.g. seqhead-tuned-lm.seed0)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the grid's runs go (default: beside train.run_dir)")
    parser.add_argument("--set", action="append", default=[], dest="fixed", metavar="KEY=VALUE",
                        help="a fixed override for every grid point (repeatable), e.g. seqhead.hidden=128")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="grid this key of the model's section (or model.pretrained_mix, for the head) "
                             "instead of the default grid (repeatable)")
    parser.add_argument("--missing-only", action="store_true",
                        help="keep the points the tuning file already holds and train only the grid's others")
    args = parser.parse_args()
    grid = _grid(args.model, args.grid)
    args.out = f"{args.model}_tuning" + ("".join(f"_{k.split('.')[1]}" for k in grid) if args.grid else "")
    base = load_params(args.params, args.fixed, experiment=args.experiment)
    runs = (args.runs or base.resolve(base.train.run_dir).parent / f"{args.model}-tuning").resolve()
    recorded = _recorded(base, args.out, args.experiment, args.fixed) if args.missing_only else []
    points, total = list(recorded), len(list(itertools.product(*grid.values())))
    fixed = [option.split(".", 1)[-1].replace("=", "") for option in args.fixed]  # in the points' folder names
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        if any(all(p.get(k) == v for k, v in setting.items()) for p in points):
            print(f"{setting}: recorded in {args.out}.json, kept")
            continue
        name = "-".join([*fixed, *(f"{k.split('.')[1]}{v if isinstance(v, str) else format(v, 'g')}"
                                   for k, v in setting.items())])
        overrides = [*args.fixed, *(f"{k}={v}" for k, v in setting.items()),
                     f"{args.model}.run_dir={runs / name / args.model}", f"train.run_dir={runs / name}"]
        params = load_params(args.params, overrides, experiment=args.experiment)
        if args.model == "seqhead" and params.seqhead.item_vectors == "tuned":
            _link_lm(base, params)
        started = time.perf_counter()
        summary = train_sasrec(params, resume="auto", show_progress=False, head=args.model)
        result = evaluate(params, (args.model,), "valid")["models"][args.model]
        valid, tail = result["overall"], result.get("by_group", {}).get("tail", {})
        cfg = getattr(params, args.model)
        point = {**setting, "max_len": cfg.max_len, "layers": cfg.layers,
                 "epochs_run": summary["cost"]["epochs_run"], "valid_ndcg@10": valid["ndcg@10"],
                 "valid_recall@10": valid["recall@10"], "valid_tail_ndcg@10": tail.get("ndcg@10"),
                 "seconds": round(time.perf_counter() - started, 1)}
        points.append(point)
        print(json.dumps(point), flush=True)
        _write(base, args, grid, points, total)  # after every point: an interrupted grid keeps its points
    if points:
        print(f"best on validation: {_best(points)}")


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
            raise SystemExit(f"--grid {option!r}: expected {model}.<key>=<v1>,<v2>,...{also}")
        grid[key] = [_number(v) for v in values.split(",")]
    return grid


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
        raise SystemExit(f"{source} not found: train the experiment's LM first (`llmrec analyses --only ...`)")
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


def _write(base: Params, args: argparse.Namespace, grid: dict, points: list[dict], total: int) -> None:
    out = _path(base, args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"params": str(args.params), "model": args.model, "experiment": args.experiment,
                               "fixed": args.fixed, "split": "valid (whole split)", "grid": grid, "points": points,
                               "points_total": total, "best": _best(points),
                               "machine": {"machine": f"CPU {platform.machine()}", "cpu_threads": os.cpu_count(),
                                           "load_1min": round(os.getloadavg()[0], 2),
                                           "date": time.strftime("%Y-%m-%d")}},
                              indent=2))


if __name__ == "__main__":
    main()

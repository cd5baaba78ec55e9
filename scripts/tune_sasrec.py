"""Tune SASRec's few knobs on the validation split, then freeze the winner in the params file by hand.

Trains one SASRec per grid point (the base config's setting and data, early stopping as configured),
evaluates each on the whole validation split, and writes every point with its validation NDCG@10 to
`<report.benchmarks_dir>/sasrec_tuning.json`; the report shows that table beside the frozen values.
The test split is never read.

    python scripts/tune_sasrec.py --params configs/ml-100k.yaml
    python scripts/tune_sasrec.py --params configs/ml-100k.yaml --missing-only   # finish an interrupted grid
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

from llmrec_core.config import load_params
from llmrec_core.evaluate.run import evaluate
from llmrec_core.train.sasrec import train_sasrec

GRID = {"sasrec.hidden": [64, 128], "sasrec.dropout": [0.2, 0.5]}  # lr: the params file's (RecBole: 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--runs", type=Path, default=None, help="where the grid's runs go (default: beside train.run_dir)")
    parser.add_argument("--missing-only", action="store_true",
                        help="keep the points sasrec_tuning.json already holds and train only the grid's others")
    args = parser.parse_args()
    base = load_params(args.params)
    runs = args.runs or base.resolve(base.train.run_dir).parent / "sasrec-tuning"
    points, total = _recorded(base) if args.missing_only else [], len(list(itertools.product(*GRID.values())))
    for values in itertools.product(*GRID.values()):
        setting = dict(zip(GRID, values))
        if any(all(p.get(k) == v for k, v in setting.items()) for p in points):
            print(f"{setting}: recorded in sasrec_tuning.json, kept")
            continue
        name = "-".join(f"{k.split('.')[1]}{v:g}" for k, v in setting.items())
        overrides = [f"{k}={v}" for k, v in setting.items()] + [f"sasrec.run_dir={runs / name}",
                                                                 f"train.run_dir={runs / name}"]
        params = load_params(args.params, overrides)
        started = time.perf_counter()
        summary = train_sasrec(params, resume="auto", show_progress=False)
        valid = evaluate(params, ("sasrec",), "valid")["models"]["sasrec"]["overall"]
        point = {**setting, "max_len": params.sasrec.max_len, "layers": params.sasrec.layers,
                 "epochs_run": summary["cost"]["epochs_run"], "valid_ndcg@10": valid["ndcg@10"],
                 "valid_recall@10": valid["recall@10"], "seconds": round(time.perf_counter() - started, 1)}
        points.append(point)
        print(json.dumps(point), flush=True)
        _write(base, args.params, points, total)  # after every point: an interrupted grid keeps its points
    if points:
        print(f"best on validation: {_best(points)}")


def _recorded(base) -> list[dict]:
    """The points of an earlier (possibly interrupted) grid, from sasrec_tuning.json."""
    path = base.resolve(base.report.benchmarks_dir) / "sasrec_tuning.json"
    return json.loads(path.read_text())["points"] if path.is_file() else []


def _best(points: list[dict]) -> dict:
    return max(points, key=lambda p: p["valid_ndcg@10"])


def _write(base, params_path: Path, points: list[dict], total: int) -> None:
    out = base.resolve(base.report.benchmarks_dir) / "sasrec_tuning.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"params": str(params_path), "split": "valid (whole split)", "grid": GRID,
                               "points": points, "points_total": total, "best": _best(points),
                               "machine": {"machine": f"CPU {platform.machine()}", "date": time.strftime("%Y-%m-%d")}},
                              indent=2))


if __name__ == "__main__":
    main()

"""Soak of `llmrec serve` (make bench-soak; on demand, not in CI): minutes of concurrent /recommend, POST /items
and POST /reload against a real server killed with SIGKILL at random moments and restarted, then a check that
every item answered with 200 is served (by a search for its title, in its domain's listing, in the index a fresh
load gives) and in the accepted-items log exactly once. The short version of the same soak is in the tests.

The data is the embedded sample (prepared under bench/soak/), the model untuned MiniLM (the default model),
the index zero-shot. Figures go to reports/benchmarks/soak.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORK = REPO / "bench" / "soak"


def prepare(work: Path) -> Path:
    """The embedded sample ingested, validated and prepared under `work`, its zero-shot index built; a fresh
    new-items store. Returns the params file."""
    from llmrec_core.config import load_params
    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.prepare import prepare as prepare_data
    from llmrec_core.data.validate import validate
    from llmrec_core.serve.recommend import build_index

    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    for src in doc["data"]["sources"]:
        for key in ("interactions", "items"):
            src[key] = str(REPO / src[key])
    doc["data"]["root"] = str(work / "data")
    doc["validation"]["results_dir"] = str(work / "gx")
    doc["train"]["run_dir"] = str(work / "run")
    path = work / "params.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    params = load_params(path)
    if not (params.data_root / "prepared" / "items.parquet").is_file():
        ingest(params)
        validate(params)
        prepare_data(params)
    build_index(params, zero_shot=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--kill-after", type=float, nargs=2, default=(10.0, 40.0),
                        help="a SIGKILL uniform(a, b) seconds after each start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks" / "soak.json")
    parser.add_argument("--note", default="", help="what else ran on the machine (load)")
    args = parser.parse_args()

    from tests.soak import soak

    import shutil
    shutil.rmtree(WORK / "data" / "new_items", ignore_errors=True)  # every soak starts from an empty store
    params_path = prepare(WORK)
    load_before = os.getloadavg()
    figures = soak(params_path, args.minutes * 60, tuple(args.kill_after), WORK / "serve.log", seed=args.seed,
                   progress=lambda m: print(m, flush=True))
    figures = {"benchmark": "soak", "at": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "python": platform.python_version(), "load_average_before": [round(x, 2) for x in load_before],
                           "load_average_after": [round(x, 2) for x in os.getloadavg()], "note": args.note},
               "settings": {"minutes": args.minutes, "kill_after_s": list(args.kill_after), "seed": args.seed,
                            "model": "untuned MiniLM (minilm), zero-shot index of the embedded sample"},
               **figures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("duration_s", "kills", "requests", "items_acknowledged",
                                              "items_lost")}))
    if figures["items_lost"] or figures["missing"]["logged_more_than_once"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""`analyses`: every experiment of a params file (trained, evaluated, indexed), then the report.

  prefect deployment run 'analyses/default' -p params=configs/ml-100k.yaml
The experiment list in the params file is the one definition; `llmrec analyses` runs the same.
"""
from __future__ import annotations

from prefect import flow

from flows.train_eval import PROJECT
from llmrec_core.analyses import select_runs
from llmrec_core.config import load_params
from tasks.analyses import experiment, report


@flow(name="analyses", log_prints=True)
def analyses(params: str = str(PROJECT / "configs" / "ml-100k.yaml"), only: list[str] | None = None) -> str:
    names = select_runs(load_params(params), only)  # an experiment with `seeds` is one run per seed
    for name in names:  # one at a time: each run wants every core (or the one GPU)
        experiment(params, name)
    return report(params)


if __name__ == "__main__":
    analyses()

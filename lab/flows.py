"""The lab's Prefect flow `analyses`: every experiment of a params file (trained, evaluated, indexed), then the
report. `python -m lab.flows` serves it as a deployment (with a Prefect API configured):

  prefect deployment run 'analyses/default' -p params=configs/ml-100k.yaml

The experiment list in the params file is the one definition; `llmrec-lab analyses` runs the same. Prepare the
params file's data first (`llmrec ingest/validate/prepare --params ...`).
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, serve, task
from prefect.artifacts import create_markdown_artifact

from llmrec_core.config import load_params

from .experiments import run_experiment, select_runs
from .report.build import build_report

PROJECT = Path(__file__).resolve().parents[1]


@task(task_run_name="experiment-{name}")
def experiment(params_path: str, name: str) -> dict:
    # DVC-style caching lives in run_experiment (a finished, unchanged experiment is skipped); no Prefect cache
    return run_experiment(Path(params_path), name, log=get_run_logger().info)


@task
def report(params_path: str) -> str:
    path = build_report(Path(params_path))
    create_markdown_artifact(markdown=path.read_text(), key="analyses-report",
                             description=f"{path} (figures beside it)")
    return str(path)


@flow(name="analyses", log_prints=True)
def analyses(params: str = str(PROJECT / "configs" / "ml-100k.yaml"), only: list[str] | None = None) -> str:
    names = select_runs(load_params(params), only)  # an experiment with `seeds` is one run per seed
    for name in names:  # one at a time: each run wants every core (or the one GPU)
        experiment(params, name)
    return report(params)


def main() -> None:
    serve(analyses.to_deployment(name="default"))


if __name__ == "__main__":
    main()

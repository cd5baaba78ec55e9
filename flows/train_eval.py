"""`train-eval`: reproduce the DVC pipeline, push to the S3 remote, publish metrics, cost and the report."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment

from llmrec_core.config import load_params
from tasks.pipeline import StageFailed, publish, push, repro, stage_names

PROJECT = Path(__file__).resolve().parents[1]
TRAIN_STAGES = ("train", "sasrec")  # the dvc.yaml stages a `train_deployment` runs instead


def _train_remotely(deployment: str, project: str) -> None:
    """Run the train stages as a flow run of `deployment` (e.g. on a `gpu` work pool) and wait for it."""
    run = run_deployment(deployment, parameters={"project": project}, timeout=None)
    if not run.state.is_completed():
        raise StageFailed(f"{deployment} ended {run.state.type.value}: {run.state.message}")


@flow(name="train-stage", log_prints=True)
def train_stage(project: str = str(PROJECT)) -> None:
    """The training stages alone, for a deployment on a separate (GPU) work pool."""
    for stage in TRAIN_STAGES:
        repro(stage, project)


@flow(name="train-eval", log_prints=True)
def train_eval(project: str = str(PROJECT), push_results: bool | None = None) -> str:
    params = load_params(Path(project) / "params.yaml")
    remote = params.orchestration.train_deployment
    for stage in stage_names(Path(project)):
        if remote and stage in TRAIN_STAGES:
            if stage == TRAIN_STAGES[0]:
                _train_remotely(remote, project)
            continue
        repro(stage, project)
    if params.orchestration.push if push_results is None else push_results:
        push(project)
    table = publish(project)
    get_run_logger().info("test metrics:\n" + table)
    return table


if __name__ == "__main__":
    import sys

    print(train_eval(push_results=None if "--no-push" not in sys.argv else False))

"""`train-eval`: reproduce the DVC pipeline of a params file, push it to the S3 remote, register the trained model
and let it serve only if it passes the gate against the champion; publish metrics, cost and the decision."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment

from llmrec_core.config import load_params
from tasks.pipeline import StageFailed, publish, push, repro, stage_names, write_pipeline
from tasks.registry import register

PROJECT = Path(__file__).resolve().parents[1]


def _train_remotely(deployment: str, project: str, params: str) -> None:
    """Run the train stages as a flow run of `deployment` (e.g. on a `gpu` work pool) and wait for it."""
    run = run_deployment(deployment, parameters={"project": project, "params": params}, timeout=None)
    if not run.state.is_completed():
        raise StageFailed(f"{deployment} ended {run.state.type.value}: {run.state.message}")


@flow(name="train-stage", log_prints=True)
def train_stage(project: str = str(PROJECT), params: str = "params.yaml") -> None:
    """The training stages alone, for a deployment on a separate (GPU) work pool."""
    pipeline = write_pipeline(project, params)
    for stage in stage_names(pipeline):
        if stage.startswith("train-"):
            repro(stage, project, pipeline)


@flow(name="train-eval", log_prints=True)
def train_eval(project: str = str(PROJECT), params: str = "params.yaml", push_results: bool | None = None) -> dict:
    """`params` is relative to `project`: params.yaml (the sample) or e.g. configs/ml-100k.yaml."""
    config = load_params(Path(project) / params)
    pipeline = write_pipeline(project, params)
    remote = config.orchestration.train_deployment
    trained_remotely = False
    for stage in stage_names(pipeline):
        if remote and stage.startswith("train-"):
            if not trained_remotely:
                _train_remotely(remote, project, params)
                trained_remotely = True
            continue
        repro(stage, project, pipeline)
    decision = register(project, params)
    if config.orchestration.push if push_results is None else push_results:
        push(project, pipeline, config.registry.dir)
    table = publish(project, params)
    get_run_logger().info("test metrics:\n" + table)
    return {"metrics": table, "decision": decision}


if __name__ == "__main__":
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    result = train_eval(params=args[0] if args else "params.yaml",
                        push_results=None if "--no-push" not in sys.argv else False)
    print(result["metrics"])
    print(f"model version {result['decision']['version']}: "
          + ("promoted, it serves now" if result["decision"]["promoted"] else "not promoted, the champion keeps serving")
          + f" ({result['decision']['reason']})")

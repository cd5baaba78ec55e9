"""Prefect tasks that run DVC stages, push to the remote and publish results.

The stage graph is written from the params file (`llmrec pipeline`) into a dvc.yaml; these tasks only ask DVC to
reproduce its stages by name.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.tasks import exponential_backoff


class StageFailed(RuntimeError):
    pass


class RemoteError(RuntimeError):
    pass


class MissingCredentials(RemoteError):
    pass


def tool(name: str) -> str:
    """A console script of the environment Prefect runs in (dvc, llmrec)."""
    return str(Path(sys.executable).with_name(name))


def stage_names(pipeline: Path) -> list[str]:
    """The stages of a dvc.yaml, in file order (which is dependency order)."""
    return list(yaml.safe_load(Path(pipeline).read_text())["stages"])


def _target(project: str, pipeline: Path, stage: str) -> str:
    """How `dvc repro` names `stage` of `pipeline`: bare for the project's dvc.yaml, else file:stage."""
    if Path(pipeline).resolve() == (Path(project) / "dvc.yaml").resolve():
        return stage
    return f"{Path(pipeline).resolve().relative_to(Path(project).resolve()).as_posix()}:{stage}"


def run_command(cmd: list[str], project: Path, error: type[Exception], what: str) -> str:
    logger = get_run_logger()
    proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                 # dvc.yaml commands call `llmrec`: the one next to this interpreter
                                 "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])})
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        logger.info(line.rstrip())
    if proc.wait():
        raise error(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(lines[-25:]))
    return "\n".join(lines)


@task(name="write-pipeline")
def write_pipeline(project: str, params: str) -> Path:
    """`llmrec pipeline --params <params>`: the DVC stages of that params file (dvc.yaml for params.yaml)."""
    from llmrec_core.dvc_pipeline import pipeline_file

    run_command([tool("llmrec"), "pipeline", "--params", params], Path(project), StageFailed, "llmrec pipeline")
    return pipeline_file(Path(project), Path(project) / params)


@task(name="dvc-repro", task_run_name="repro {stage}")
def repro(stage: str, project: str, pipeline: Path) -> str:
    """`dvc repro <stage>`: runs it and what it depends on when changed; a killed training resumes
    from its checkpoint (the train stages use --auto-resume)."""
    target = _target(project, pipeline, stage)
    return run_command([tool("dvc"), "repro", target], Path(project), StageFailed, f"dvc repro {target}")


def remote_endpoint(project: Path) -> str:
    out = subprocess.run([tool("dvc"), "config", "remote.storage.endpointurl"], cwd=project, capture_output=True,
                         text=True)
    return out.stdout.strip() or "the default S3 endpoint"


def _retry_unless_credentials(task, task_run, state) -> bool:
    try:
        state.result()
    except MissingCredentials:
        return False
    except Exception:
        return True
    return False


@task(name="dvc-push", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_jitter_factor=0.2, retry_condition_fn=_retry_unless_credentials)
def push(project: str, pipeline: Path | None = None, registry: Path | str | None = None) -> str:
    """Push the pipeline's data and checkpoints, and the model registry, to the S3 remote; retried with backoff,
    then a clear error."""
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(k)]
    if missing:
        raise MissingCredentials(f"cannot push: {' and '.join(missing)} not set (see README: storage)")
    endpoint = remote_endpoint(Path(project))
    targets = [] if pipeline is None else [str(Path(pipeline).resolve())]
    if registry is not None and (Path(project) / f"{registry}.dvc").is_file():
        targets.append(str(Path(project) / f"{registry}.dvc"))
    return run_command([tool("dvc"), "push", *targets], Path(project), RemoteError, f"dvc push to {endpoint}")


@task(name="publish-results")
def publish(project: str, params: str = "params.yaml") -> str:
    """Metrics and cost tables as Prefect markdown artifacts, read from the run's metrics files."""
    from llmrec_core.config import load_params
    from llmrec_core.summary import cost_markdown, metrics_markdown

    config = load_params(Path(project) / params)
    run = config.resolve(config.train.run_dir)
    metrics = metrics_markdown(run, config.eval.ks)
    create_markdown_artifact(key="metrics", markdown="# Test metrics (full ranking)\n\n" + metrics,
                             description="Recall/NDCG@K and MRR per model")
    create_markdown_artifact(key="cost", markdown="# Cost\n\n" + cost_markdown(run))
    plots = sorted(str(p.relative_to(project)) for p in run.glob("*.csv"))
    create_markdown_artifact(key="plots", markdown="# Plot data\n\n`dvc plots show` renders:\n\n" +
                             "\n".join(f"- `{p}`" for p in plots))
    return metrics

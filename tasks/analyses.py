"""Thin Prefect wrappers over llmrec_core.analyses and llmrec_core.report (one task per experiment)."""
from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from llmrec_core.analyses import run_experiment
from llmrec_core.report.build import build_report


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

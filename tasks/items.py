"""Prefect tasks for new items: validate + embed + index (llmrec_core.serve.new_items), version with DVC."""
from __future__ import annotations

import os
from pathlib import Path

from prefect import get_run_logger, task

from llmrec_core.config import load_params


@task(name="ingest-new-items-file", retries=0)
def ingest_file(project: str, file: str) -> dict:
    from llmrec_core.serve.new_items import ingest_new_items

    params = load_params(Path(project) / "params.yaml")
    result = ingest_new_items(params, Path(file))
    logger = get_run_logger()
    for row in result.quarantined.itertuples():
        logger.warning(f"quarantined {row.source_file}:{row.source_line}: {row.reason}")
    logger.info(f"{len(result.accepted)} new items indexed; {result.since_training} since the last training")
    return {"accepted": len(result.accepted), "quarantined": len(result.quarantined), "rejected": result.rejected,
            "since_training": result.since_training, "threshold": params.orchestration.new_items_threshold}


@task(name="reset-new-item-count")
def reset_count(project: str) -> None:
    from llmrec_core.serve.item_store import reset_since_training

    reset_since_training(load_params(Path(project) / "params.yaml"))


@task(name="version-new-items", retries=2, retry_delay_seconds=2)
def version(project: str) -> str:
    """`dvc add data/new_items`: the accepted items and the quarantine become a tracked version."""
    from tasks.pipeline import StageFailed, run_command, tool

    return run_command([tool("dvc"), "add", "data/new_items"], Path(project), StageFailed, "dvc add data/new_items")


@task(name="reload-service", retries=2, retry_delay_seconds=5)
def reload_service(project: str) -> dict | None:
    """After a retrain: tell the running `llmrec serve` (orchestration.serve_url) to swap in the new model, with
    $LLMREC_API_TOKEN as the bearer token when it is set (as the service requires when it has one)."""
    import httpx

    from llmrec_core.serve.auth import TOKEN_ENV

    url = load_params(Path(project) / "params.yaml").orchestration.serve_url
    if not url:
        return None
    token = os.environ.get(TOKEN_ENV)  # the token the service was started with, if any
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(url.rstrip("/") + "/reload", headers=headers, timeout=300)
    response.raise_for_status()
    return response.json()  # the service's /healthz after the swap (its generation, items, loaded_at)

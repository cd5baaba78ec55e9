"""Prefect tasks for new items: validate + embed + index (llmrec_core.serve.new_items), version with DVC."""
from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from llmrec_core.config import load_params


@task(name="ingest-new-items-file", retries=0)
def ingest_file(project: str, file: str) -> dict:
    from llmrec_core.registry import serving_params
    from llmrec_core.serve.new_items import ingest_new_items

    params = load_params(Path(project) / "params.yaml")
    result = ingest_new_items(serving_params(params)[0], Path(file))  # into the index that serves
    logger = get_run_logger()
    for row in result.quarantined.itertuples():
        logger.warning(f"quarantined {row.source_file}:{row.source_line}: {row.reason}")
    logger.info(f"{len(result.accepted)} new items indexed; {result.since_training} since the last training")
    return {"accepted": len(result.accepted), "quarantined": len(result.quarantined), "rejected": result.rejected,
            "since_training": result.since_training, "threshold": params.orchestration.new_items_threshold}


@task(name="reset-new-item-count")
def reset_count(project: str, params: str = "params.yaml") -> None:
    from llmrec_core.serve.item_store import reset_since_training

    reset_since_training(load_params(Path(project) / params))


@task(name="version-new-items", retries=2, retry_delay_seconds=2)
def version(project: str) -> str:
    """`dvc add data/new_items`: the accepted items and the quarantine become a tracked version."""
    from tasks.pipeline import StageFailed, run_command, tool

    return run_command([tool("dvc"), "add", "data/new_items"], Path(project), StageFailed, "dvc add data/new_items")


@task(name="reload-service", retries=2, retry_delay_seconds=5)
def reload_service(project: str, params: str = "params.yaml") -> dict | None:
    """After a promotion: tell the running `llmrec serve` (orchestration.serve_url) to swap in the new champion, with
    $LLMREC_API_TOKEN as the bearer token when it is set; returns its /healthz after the swap (None: no serve_url)."""
    from llmrec_core.promotion import reload_server

    config = load_params(Path(project) / params)
    said, health = reload_server(config)
    if config.orchestration.serve_url and health is None:
        raise RuntimeError(f"reload{said}")  # retried, then the flow says the server did not reload
    return health

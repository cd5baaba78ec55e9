"""`ingest-new-items`: validate a new-items file, make the items recommendable at once (zero-shot
embedding into the faiss index), version them, and start a retrain past the threshold."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment

from flows.retrain import retrain
from flows.train_eval import PROJECT
from llmrec_core.config import load_params
from tasks.items import ingest_file, version as version_items
from tasks.pipeline import push


@flow(name="ingest-new-items", log_prints=True)
def ingest_new_items(file: str, project: str = str(PROJECT), version: bool = True) -> dict:
    logger = get_run_logger()
    result = ingest_file(project, file)
    if result["rejected"]:
        logger.error(f"{file} rejected: {result['quarantined']} bad rows; the index was not changed")
        return result
    params = load_params(Path(project) / "params.yaml")
    if version:
        version_items(project)
        if params.orchestration.push:
            push(project)
    result["retrain"] = result["since_training"] >= params.orchestration.new_items_threshold
    if result["retrain"]:
        reason = f"{result['since_training']} new items >= threshold {params.orchestration.new_items_threshold}"
        if params.orchestration.retrain_mode == "deployment":
            run = run_deployment("retrain/scheduled", parameters={"project": project, "reason": reason}, timeout=0)
            result["retrain_flow_run"] = str(run.id)
        else:
            retrain(project, reason)
    return result

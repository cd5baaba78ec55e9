"""`retrain`: the train-eval pipeline again (on a cron schedule, or when enough new items arrived); the new model
serves only if it passes the gate, and a running `llmrec serve` reloads only then."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows.train_eval import PROJECT, train_eval
from tasks.items import reload_service, reset_count


@flow(name="retrain", log_prints=True)
def retrain(project: str = str(PROJECT), reason: str = "schedule", params: str = "params.yaml") -> dict:
    get_run_logger().info(f"retraining ({reason})")
    result = train_eval(project, params)
    reset_count(project, params)
    if result["decision"]["promoted"]:
        reload_service(project, params)  # a running `llmrec serve` swaps in the new champion (orchestration.serve_url)
    return result

"""`retrain`: the train-eval pipeline again (on a cron schedule, or when enough new items arrived)."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows.train_eval import PROJECT, train_eval
from tasks.items import reload_service, reset_count


@flow(name="retrain", log_prints=True)
def retrain(project: str = str(PROJECT), reason: str = "schedule") -> str:
    get_run_logger().info(f"retraining ({reason})")
    table = train_eval(project)
    reset_count(project)
    reload_service(project)  # a running `llmrec serve` swaps in the new weights and index (orchestration.serve_url)
    return table

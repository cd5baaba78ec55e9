"""Serve the product's deployments from this process (Prefect 3 `serve`): run with a Prefect API configured.

  train-eval/default          on demand: prefect deployment run 'train-eval/default'
  retrain/scheduled           cron from params.yaml (orchestration.retrain_cron)
  ingest-new-items/default    prefect deployment run 'ingest-new-items/default' -p file=path/to/items.jsonl
  train-stage/default         what orchestration.train_deployment can point at (or deploy it to a gpu pool)

The lab's `analyses` flow serves from its own process: python -m lab.flows
"""
from __future__ import annotations

from prefect import serve

from flows.new_items import ingest_new_items
from flows.retrain import retrain
from flows.train_eval import PROJECT, train_eval, train_stage
from llmrec_core.config import load_params


def main() -> None:
    params = load_params(PROJECT / "params.yaml")
    serve(
        train_eval.to_deployment(name="default"),
        retrain.to_deployment(name="scheduled", cron=params.orchestration.retrain_cron),
        ingest_new_items.to_deployment(name="default"),
        train_stage.to_deployment(name="default"),
    )


if __name__ == "__main__":
    main()

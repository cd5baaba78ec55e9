"""Prefect flows: train-eval, ingest-new-items, retrain (deployments in flows/serve.py)."""

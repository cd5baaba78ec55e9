"""Thin Prefect tasks over llmrec_core and the DVC pipeline (no logic of their own)."""

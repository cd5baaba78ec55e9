"""Markdown helpers of the report: the product's number formatting and tables, and means over seeds."""
from __future__ import annotations

from llmrec_core.markdown import fmt, table

__all__ = ["fmt", "mean_sd", "table"]


def mean_sd(mean: float | None, sd: float | None) -> str:
    """"0.1234 ± 0.0056" (standard deviation across seeds), or the mean alone for one seed."""
    if mean is None:
        return "–"
    return f"{mean:.4f} ± {sd:.4f}" if sd is not None else f"{mean:.4f}"

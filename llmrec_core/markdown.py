"""Markdown for people: number formatting and tables (run summaries, the lab's report)."""
from __future__ import annotations


def fmt(value, digits: int = 4) -> str:
    """A value as the report prints it: integers with thousands separators; floats with `digits` decimals below 1,
    two below 100, none above; yes/no for booleans; '–' for None."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):  # metrics and small costs keep 4 decimals; rates and sizes fewer
        return f"{value:.{digits}f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(columns: list[str], rows: list[list]) -> str:
    """A markdown table; columns whose cells are all numbers are right-aligned."""
    numeric = [all(isinstance(r[i], (int, float)) for r in rows if r[i] is not None) for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)

"""`llmrec-lab report`: the paper's analyses as one markdown file with PNG plots.

Every number is read from the files the analyses wrote (collect.py). Each "A vs B" carries the
difference of the means and its 95% bootstrap interval over test targets (stats.py), and each sentence
that says whether a finding of the paper holds is computed from that interval: "holds" or "does not
hold" only when it excludes zero, else "inconclusive at this budget". Domain counts are shown, never
decide. Every arm prints its budget; sections are numbered when the file is written.

core.py holds the runs and the selections every section uses; sections_*.py write the sections.
"""
from __future__ import annotations

from pathlib import Path

from llmrec_core.config import load_params
from .core import Report
from .sections_claims import registered_claims
from .sections_items import item_groups, new_items, zero_shot
from .sections_lm import data_settings, headline, levers, model_size, negatives, tuning
from .sections_runs import all_runs, deployment_cost, sasrec, tuning_budgets

SECTIONS = [  # (key for cross-references, title, writer), in the order of the file
    ("claims", "Registered claims", registered_claims),
    ("tuning_budgets", "Tuning budgets", tuning_budgets),
    ("headline", "LLM-Rec against the baselines", headline),
    ("levers", "Levers toward SASRec on warm items", levers),
    ("data_settings", "Data settings: Single Domain vs S2PIAO vs Mixed", data_settings),
    ("model_size", "Model size", model_size),
    ("tuning", "FPFT vs PEFT (LoRA)", tuning),
    ("item_groups", "Cold-start and tail items", item_groups),
    ("new_items", "New items", new_items),
    ("zero_shot", "Zero-shot: untuned LM and leave-one-domain-out", zero_shot),
    ("negatives", "Negatives", negatives),
    ("deployment_cost", "Deployment cost", deployment_cost),
    ("sasrec", "The SASRec baseline", sasrec),
    ("all_runs", "Every run", all_runs),
]


def write_report(report: Report) -> Path:
    """Number the sections (cross-references use the numbers), write the markdown file; returns its path."""
    report.section_numbers = {key: i for i, (key, _, _) in enumerate(SECTIONS, start=1)}
    parts = [report.header()]
    for key, title, writer in SECTIONS:
        parts.append(f"## {report.section_numbers[key]}. {title}\n\n{writer(report)}")
    report.out.parent.mkdir(parents=True, exist_ok=True)
    report.out.write_text("\n\n".join(parts) + "\n")
    return report.out


def build_report(params_path: Path, out: Path | None = None) -> Path:
    """Write the analyses report (markdown and PNG figures) for a params file's experiments; returns its path."""
    base = load_params(params_path)
    return write_report(Report(params_path, out or base.resolve(base.report.out)))

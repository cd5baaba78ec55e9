"""Prefect task for the model registry: register the pipeline's model, gate it, version the registry with DVC."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from llmrec_core.config import load_params


@task(name="register-and-gate")
def register(project: str, params: str = "params.yaml") -> dict:
    """The trained model becomes a version; it serves only if it is not worse than the champion on the same
    validation rows. The decision, promoted or not, is a Prefect artifact; the registry is then `dvc add`ed."""
    from llmrec_core.promotion import register_candidate
    from tasks.pipeline import StageFailed, run_command, tool

    config = load_params(Path(project) / params)
    decision = register_candidate(config)
    verdict = "promoted: it serves now" if decision.promoted else "not promoted: the champion keeps serving"
    champion = "none" if decision.champion is None else f"{decision.champion:.4f} (version {decision.champion_version})"
    create_markdown_artifact(
        key="promotion", description="champion / challenger decision",
        markdown=(f"# Model version {decision.version}: {verdict}\n\n{decision.reason}\n\n"
                  f"| | served validation {decision.metric} |\n| --- | --- |\n"
                  f"| candidate (version {decision.version}) | {decision.candidate:.4f} |\n| champion | {champion} |\n"))
    log = get_run_logger()
    (log.info if decision.promoted else log.warning)(f"model version {decision.version}: {verdict} ({decision.reason})")
    registry = Path(config.resolve(config.registry.dir)).relative_to(Path(project).resolve())
    run_command([tool("dvc"), "add", str(registry)], Path(project), StageFailed, f"dvc add {registry}")
    return asdict(decision)

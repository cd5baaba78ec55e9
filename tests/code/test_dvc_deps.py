"""dvc.yaml's code deps cover every module a stage's command runs, so `dvc repro` never leaves a result stale.

Each stage's command is an `llmrec` subcommand; its entry module is followed through every
`llmrec_core` import (module level or inside functions) with the standard library's `ast`.
"""
import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "llmrec_core"
ENTRY = {  # dvc.yaml stage -> the module its command runs
    "ingest": "llmrec_core/data/ingest.py",
    "validate": "llmrec_core/data/validate.py",
    "prepare": "llmrec_core/data/prepare.py",
    "train": "llmrec_core/train/loop.py",
    "sasrec": "llmrec_core/train/sequence.py",
    "evaluate": "llmrec_core/evaluate/run.py",
    "index": "llmrec_core/serve/recommend.py",
}


def _module_file(name: str) -> Path | None:
    path = REPO / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    package = ".".join(path.relative_to(REPO).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("llmrec_core"):
                file = _module_file(name)
                if file is not None:
                    found.add(file)
    return found


def closure(entry: Path) -> set[Path]:
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        # importing a module runs its packages' __init__ files too
        for parent in path.relative_to(REPO).parents:
            init = REPO / parent / "__init__.py"
            if init.is_file() and init not in seen:
                todo.append(init)
        todo.extend(_imports(path) - seen)
    return seen


def test_every_stage_depends_on_the_code_it_runs():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(ENTRY) == set(stages)
    missing = {}
    for stage, entry in ENTRY.items():
        spec = stages[stage].get("do", stages[stage])
        deps = [d for d in spec.get("deps", []) if d.startswith("llmrec_core")]
        for path in closure(REPO / entry):
            rel = path.relative_to(REPO).as_posix()
            if rel.endswith("__init__.py") and path.stat().st_size == 0:
                continue
            if not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps):
                missing.setdefault(stage, []).append(rel)
    assert not missing, f"dvc.yaml deps miss code the stage runs: {missing}"


def test_the_import_walk_finds_function_level_imports():
    found = {p.relative_to(REPO).as_posix() for p in closure(REPO / ENTRY["train"])}
    assert "llmrec_core/evaluate/run.py" in found  # training validates with the evaluator
    assert "llmrec_core/config.py" in found

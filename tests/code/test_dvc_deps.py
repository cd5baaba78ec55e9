"""The DVC pipelines are the ones the params files write, and every stage's code deps cover what its command runs.

The oracle here is independent of llmrec_core/dvc_pipeline.py: it follows the stage's `llmrec` command through
cli.py (the whole file, not only the command's function) and every `llmrec_core` import with `ast`, then checks
that no module the stage can run is missing from its deps, cli.py included.
"""
import ast
import shlex
from pathlib import Path

import pytest
import yaml

from llmrec_core.config import load_params
from llmrec_core.dvc_pipeline import code_deps, pipeline_file, render, trained_models

REPO = Path(__file__).resolve().parents[2]
PIPELINES = {"params.yaml": "dvc.yaml", "configs/ml-100k.yaml": "pipelines/ml-100k/dvc.yaml",
             "configs/ml-1m.yaml": "pipelines/ml-1m/dvc.yaml"}
ENTRY = {  # the modules each `llmrec` command runs
    "ingest": ["llmrec_core/data/ingest.py"],
    "validate": ["llmrec_core/data/validate.py"],
    "prepare": ["llmrec_core/data/prepare.py"],
    "train": ["llmrec_core/train/loop.py", "llmrec_core/train/sequence.py"],
    "evaluate": ["llmrec_core/evaluate/run.py"],
    "index": ["llmrec_core/serve/recommend.py"],
}


def _module_file(name: str) -> Path | None:
    path = REPO / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    package = ".".join(path.relative_to(REPO).parent.parts)
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
        found |= {f for n in names if n.startswith("llmrec_core") and (f := _module_file(n)) is not None}
    return found


def closure(entry: Path) -> set[Path]:
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for parent in path.relative_to(REPO).parents:  # importing a module runs its packages' __init__ files
            init = REPO / parent / "__init__.py"
            if init.is_file() and init not in seen:
                todo.append(init)
        todo.extend(_imports(path) - seen)
    return seen


@pytest.mark.parametrize("params_file", list(PIPELINES))
def test_the_committed_pipeline_is_the_one_its_params_write(params_file):
    path = REPO / params_file
    assert pipeline_file(REPO, path) == REPO / PIPELINES[params_file]
    assert (REPO / PIPELINES[params_file]).read_text() == render(load_params(path), path, REPO), \
        f"run `llmrec pipeline --params {params_file}` and commit {PIPELINES[params_file]}"


@pytest.mark.parametrize("pipeline", list(PIPELINES.values()))
def test_every_stage_depends_on_the_code_it_runs(pipeline):
    stages = yaml.safe_load((REPO / pipeline).read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        command = shlex.split(stage["cmd"])[1]
        deps = [d for d in stage["deps"] if d.startswith("llmrec_core")]
        assert "llmrec_core/cli.py" in deps, f"{name} runs cli.py"
        for path in set().union(*(closure(REPO / entry) for entry in ENTRY[command])):
            rel = path.relative_to(REPO).as_posix()
            if rel.endswith("__init__.py") and not path.stat().st_size:
                continue
            if not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps):
                missing.setdefault(name, []).append(rel)
    assert not missing, f"{pipeline}: deps miss code the stage runs: {missing}"


def test_the_stages_follow_the_models_the_config_trains():
    sample = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert [s for s in sample if s.startswith("train-")] == ["train-llmrec", "train-seqhead", "train-sasrec"]
    assert "runs/main/weights.safetensors" in sample["train-seqhead"]["deps"]  # the head reads the tuned LM
    assert sample["index"]["outs"] == [{"runs/main/seqhead/index": {"cache": False}}]  # the head serves
    assert "--models" not in sample["evaluate"]["cmd"]  # evaluate reads eval.models
    params = load_params(REPO / "params.yaml")
    lm_only = params.model_copy(update={"eval": params.eval.model_copy(update={"models": ["llmrec", "popularity"]}),
                                        "index": params.index.model_copy(update={"model": "llmrec"})})
    assert trained_models(lm_only) == ["llmrec"]
    ml100k = yaml.safe_load((REPO / "pipelines/ml-100k/dvc.yaml").read_text())["stages"]
    assert ml100k["train-seqhead"]["cmd"] == "llmrec train --params configs/ml-100k.yaml --model seqhead --auto-resume"
    assert all(stage["wdir"] == "../.." for stage in ml100k.values())


def test_the_derived_deps_follow_function_level_imports_and_only_the_command_run():
    train = code_deps("train")
    assert "llmrec_core/evaluate" in train  # training validates with the evaluator (a function-level import)
    assert "llmrec_core/cli.py" in train and "llmrec_core/config.py" in train
    assert not any(d.startswith("llmrec_core/serve") for d in train)  # cli.py's other commands do not count
    assert "llmrec_core/data/sources" in code_deps("ingest")  # the readers, imported by the package


def test_a_multi_process_train_stage_launches_the_lm_with_accelerate():
    from llmrec_core.dvc_pipeline import stages

    params = load_params(REPO / "params.yaml", ["train.processes=4"])
    written = stages(params, REPO / "params.yaml", REPO)
    assert written["train-llmrec"]["cmd"] == (
        "accelerate launch --multi_gpu --num_processes 4 --num_machines 1 --mixed_precision no --dynamo_backend no "
        "-m llmrec_core train --params params.yaml --auto-resume")
    assert written["train-seqhead"]["cmd"].startswith("llmrec train ")  # the heads train in one process
    assert {"params.yaml": ["model", "train"]} in written["train-llmrec"]["params"]  # a new count retrains

"""The DVC pipeline of a params file, written from the config: one stage per data step and per model the config
trains, then evaluation and the serving index. `llmrec pipeline --params FILE` writes it (`dvc.yaml` for the
project's `params.yaml`, `pipelines/<name>/dvc.yaml` for any other file), so `params.yaml` and the report's
configuration run through the very same stages.

Each stage's code deps are derived, not typed: the `llmrec` command it runs (cli.py's module-level imports and
the imports inside that command's function) followed through every `llmrec_core` import, at module level or
inside functions. A package folder whose every module is needed is listed as the folder.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import yaml

from .config import Params

PACKAGE = Path(__file__).resolve().parent
MODEL_SECTIONS = {"llmrec": "train", "seqhead": "seqhead", "sasrec": "sasrec"}  # a trained model -> its section
TRAINED_BY = {"seqhead_served": "seqhead"}  # an evaluated model -> the trained model it scores
HEADER = ("# Written by `llmrec pipeline --params {params}` from that file; edit the params, not this file.\n"
          "# Each stage is a plain `llmrec` command; its code deps are the modules that command runs.\n")


def pipeline_file(project: Path, params_path: Path) -> Path:
    """Where the pipeline of `params_path` lives: dvc.yaml beside the project's params.yaml, else
    pipelines/<file stem>/dvc.yaml."""
    params_path = params_path.resolve()
    if params_path == (project / "params.yaml").resolve():
        return project / "dvc.yaml"
    return project / "pipelines" / params_path.stem / "dvc.yaml"


def trained_models(params: Params) -> list[str]:
    """The models the config trains, in training order: those `eval.models` or `index.model` name, and the LM
    whose title vectors a tuned sequence head reads."""
    wanted = {TRAINED_BY.get(m, m) for m in params.eval.models} | {params.index.model}
    if "seqhead" in wanted and params.seqhead.item_vectors == "tuned":
        wanted.add("llmrec")
    return [m for m in MODEL_SECTIONS if m in wanted]


# --- code deps -------------------------------------------------------------------------------------------------

def _module_file(name: str) -> Path | None:
    path = PACKAGE.parent / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(nodes, package: str) -> set[Path]:
    found = set()
    for node in nodes:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        found |= {f for n in names if n.split(".")[0] == PACKAGE.name and (f := _module_file(n)) is not None}
    return found


def _package_of(path: Path) -> str:
    """The package a module's relative imports start from (for a package's __init__, the package itself)."""
    return ".".join(path.relative_to(PACKAGE.parent).parent.parts)


def module_imports(path: Path) -> set[Path]:
    """Every package module `path` imports, anywhere in the file."""
    return _imported(ast.walk(ast.parse(path.read_text())), _package_of(path))


def command_imports(command: str) -> set[Path]:
    """What cli.py's `command` function imports, plus cli.py's module-level imports."""
    cli = PACKAGE / "cli.py"
    tree = ast.parse(cli.read_text())
    body = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    function = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == command), None)
    if function is None:
        raise ValueError(f"cli.py has no command function {command!r}")
    nodes = [m for n in body for m in ast.walk(n)] + list(ast.walk(function))
    return _imported(nodes, _package_of(cli)) | {cli}


def closure(start: set[Path], expanded: frozenset[Path] = frozenset()) -> set[Path]:
    """`start` and every module they import, directly or not, with the packages' __init__ files; the modules of
    `expanded` are in `start` with the imports that count already followed."""
    seen, todo = set(), list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path in expanded:
            continue
        for parent in path.relative_to(PACKAGE.parent).parents:
            init = PACKAGE.parent / parent / "__init__.py"
            if init.is_file() and init not in seen:
                todo.append(init)
        todo.extend(module_imports(path) - seen)
    return seen


def code_deps(command: str) -> list[str]:
    """The code a `llmrec <command>` runs, as paths relative to the repository (whole folders where complete)."""
    start = command_imports(command)
    files = {p for p in closure(start, frozenset({PACKAGE / "cli.py"})) if not (p.name == "__init__.py" and not p.stat().st_size)}
    listed = set(files)
    for folder in sorted({p.parent for p in files if p.parent != PACKAGE}, key=lambda f: len(f.parts)):
        modules = {p for p in folder.rglob("*.py") if p.stat().st_size or p.name != "__init__.py"}
        if modules <= files and not any(folder.is_relative_to(f) for f in listed if f.is_dir()):
            listed = {p for p in listed if not p.is_relative_to(folder)} | {folder}
    return sorted(p.relative_to(PACKAGE.parent).as_posix() for p in listed)


# --- stages ----------------------------------------------------------------------------------------------------

def stages(params: Params, params_path: Path, project: Path) -> dict:
    """The `stages` of the pipeline of `params` (read from `params_path`), paths relative to `project`."""
    def rel(path: Path) -> str:
        return Path(os.path.relpath(params.resolve(path), project)).as_posix()

    P = Path(os.path.relpath(params_path.resolve(), project)).as_posix()
    root = Path(rel(params.data.root))
    cmd = f"llmrec {{}} --params {P}"
    sources = sorted({rel(s.interactions) for s in params.data.sources} | {rel(s.items) for s in params.data.sources})
    out = {
        "ingest": {"cmd": cmd.format("ingest"), "deps": sources + code_deps("ingest"),
                   "params": [{P: ["data"]}], "outs": [f"{root}/interim"]},
        "validate": {"cmd": cmd.format("validate"), "deps": [f"{root}/interim"] + code_deps("validate"),
                     "params": [{P: ["validation", "data.domains"]}], "outs": [f"{root}/validated"]},
        "prepare": {"cmd": cmd.format("prepare"), "deps": [f"{root}/validated"] + code_deps("prepare"),
                    "params": [{P: ["prepare", "data.top_domains", "data.domains"]}], "outs": [f"{root}/prepared"]},
    }
    weights = {}
    for model in trained_models(params):
        section = MODEL_SECTIONS[model]
        run = rel(getattr(params, section).run_dir)
        weights[model] = f"{run}/weights.safetensors"
        flag = "" if model == "llmrec" else f" --model {model}"
        deps = [f"{root}/prepared"]
        keys = [section, "train.setting", "train.domain"] if model != "llmrec" else ["model", "train"]
        if model == "seqhead":
            keys.append("model")
            if params.seqhead.item_vectors == "tuned":
                deps.append(weights["llmrec"])
        # --auto-resume: a killed run continues from its checkpoint; changed params start over
        train = cmd.format("train")
        if model == "llmrec" and params.train.processes > 1:  # data-parallel: one process per GPU
            train = (f"accelerate launch --multi_gpu --num_processes {params.train.processes} --num_machines 1 "
                     f"--mixed_precision no --dynamo_backend no -m llmrec_core train --params {P}")
        out[f"train-{model}"] = {
            "cmd": train + flag + " --auto-resume",
            "deps": deps + code_deps("train"), "params": [{P: keys}],
            "outs": [{weights[model]: {"persist": True}}, {f"{run}/checkpoint.pt": {"persist": True, "cache": False}}],
            "metrics": [{f"{run}/train_metrics.json": {"cache": False}}]}
    run = rel(params.train.run_dir)
    evaluated = {TRAINED_BY.get(m, m) for m in params.eval.models}
    out["evaluate"] = {
        "cmd": cmd.format("evaluate"),  # the test split; the registry's gate scores validation as served
        "deps": [f"{root}/prepared"] + [weights[m] for m in weights if m in evaluated] + code_deps("evaluate"),
        "params": [{P: ["eval", "model"] + (["index"] if "seqhead_served" in params.eval.models else [])}],
        "outs": [{f"{run}/{name}": {"cache": False}} for name in
                 ("metrics_test.json", "ranks_test.parquet", "cost_eval.json")],
        "metrics": [{f"{run}/summary_test.json": {"cache": False}}],
        "plots": [{f"{run}/domains_test.csv": {"cache": False, "x": "domain", "y": "ndcg@10",
                                               "template": "bar_horizontal"}}]}
    served = [weights[m] for m in (["llmrec", "seqhead"] if params.index.model == "seqhead" else ["llmrec"])
              if m in weights]
    index_folder = Path(served[-1]).parent / "index"
    out["index"] = {
        "cmd": cmd.format("index"), "deps": [f"{root}/prepared"] + served + code_deps("index"),
        "params": [{P: ["model", "index", "seqhead.item_vectors"]}],
        # not cached: derived from the weights plus the new items accepted since, which DVC's run cache must not
        # roll back
        "outs": [{index_folder.as_posix(): {"cache": False}}]}
    if project / "dvc.yaml" != pipeline_file(project, params_path):
        wdir = Path(os.path.relpath(project, pipeline_file(project, params_path).parent)).as_posix()
        for stage in out.values():
            stage["wdir"] = wdir
    return out


def render(params: Params, params_path: Path, project: Path) -> str:
    """The dvc.yaml text of the pipeline of `params`."""
    P = Path(os.path.relpath(params_path.resolve(), project)).as_posix()
    body = yaml.safe_dump({"stages": stages(params, params_path, project)}, sort_keys=False, width=120)
    return HEADER.format(params=P) + body


def write_pipeline(params: Params, params_path: Path, project: Path) -> tuple[Path, bool]:
    """Write the pipeline file of `params`; returns (its path, whether it changed)."""
    path = pipeline_file(project, params_path)
    text = render(params, params_path, project)
    changed = not path.is_file() or path.read_text() != text
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path, changed

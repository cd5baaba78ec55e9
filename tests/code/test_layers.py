"""The package's layers, enforced: a module imports only its own layer or lower ones, and no two modules
import each other, directly or through others (function-level imports count: they are edges too).

    0  config, errors, provenance, cost,     what everything may use
       markdown
    1  data                                  sources, stages, the prepared-data contract
    2  model                                 the networks and their text
    3  train, evaluate                       learning and measuring
    4  serve, summary, registry, promotion,  using the results: serving, model versions and the gate, the DVC
       dvc_pipeline                          pipeline of a params file
    5  cli, __main__                         the command line (tasks/ and flows/ sit above, outside)

The lab (lab/: experiments, tuning, the report) stands beside the product: it imports llmrec_core, and
nothing in llmrec_core/, tasks/ or flows/ imports it.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "llmrec_core"
REPO = PACKAGE.parent
PRODUCT = ("llmrec_core", "tasks", "flows")
LAYERS = {"config": 0, "errors": 0, "provenance": 0, "cost": 0, "markdown": 0, "data": 1, "model": 2, "train": 3,
          "evaluate": 3, "serve": 4, "summary": 4, "registry": 4,
          "promotion": 4, "dvc_pipeline": 4, "cli": 5, "__main__": 5}

def _modules() -> dict[str, Path]:
    def name(path: Path) -> str:
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return {name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 5) if len(parts) > 1 else 5


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_a_higher_layer():
    graph = import_graph()
    upward = {(a, b) for a, deps in graph.items() for b in deps if layer(b) > layer(a)}
    assert not upward, f"imports of a higher layer: {sorted(upward)}"


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_see_an_upward_import_and_a_cycle():
    graph = {"llmrec_core.data.a": {"llmrec_core.serve.b"}, "llmrec_core.serve.b": {"llmrec_core.data.a"}}
    assert cycles(graph) == [set(graph)]
    assert layer("llmrec_core.serve.b") > layer("llmrec_core.data.a")
    assert "llmrec_core.train.loop" in import_graph()["llmrec_core.cli"]  # function-level imports count


def lab_imports(source: str) -> list[str]:
    """The modules of the lab that Python source imports, anywhere in it (module or function level)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        found += [n for n in names if n == "lab" or n.startswith("lab.")]
    return found


def test_the_product_never_imports_the_lab():
    offenders = {str(path.relative_to(REPO)): found for top in PRODUCT for path in sorted((REPO / top).rglob("*.py"))
                 if (found := lab_imports(path.read_text()))}
    assert not offenders, f"the product imports the lab: {offenders}"


def test_the_lab_check_sees_module_and_function_level_imports():
    assert lab_imports("import lab.cli\n") == ["lab.cli"]
    assert lab_imports("def f():\n    from lab.report.build import build_report\n") == ["lab.report.build"]
    assert lab_imports("from lab import experiments\n") == ["lab"]
    assert lab_imports("import labels\nfrom .lab import x\n") == []

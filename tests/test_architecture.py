"""The house, read from the imports of the tree: layers point down only (jobs → pipelines →
mmbatch), no import cycles, no Ray outside pipelines/adapter.py (but the progress tally actor
and the Ray Jobs client of `mmbatch nightly`), few modules directly in mmbatch/, and small classes and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"jobs": 2, "pipelines": 1, "mmbatch": 0}  # a layer imports only layers below it
RAY_ALLOWED = {"pipelines/adapter.py": "every Ray call of a run", "pipelines/tally.py": "the progress tally actor",
               "pipelines/cli/nightly.py": "the Ray Jobs client"}
MAX_CLASS_LINES, MAX_FUNCTION_LINES, MAX_CORE_MODULES = 200, 60, 10


def sources() -> dict[str, Path]:
    """Module name → file, for the three layers."""
    out = {}
    for top in LAYERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(path: Path, *, top_level_only: bool = False) -> list[str]:
    """Absolute module names `path` imports (anywhere in it, or only at module level)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an import name refers to (a submodule, or the module holding a name)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_layers_point_down_and_mmbatch_never_imports_ray():
    modules = sources()
    wrong = []
    for name, path in modules.items():
        layer = LAYERS[name.split(".")[0]]
        rel = path.relative_to(ROOT).as_posix()
        for imported in imports(path):
            top = imported.split(".")[0]
            if top in LAYERS and LAYERS[top] > layer:
                wrong.append(f"{rel} imports {imported} (a higher layer)")
            if top == "ray" and rel not in RAY_ALLOWED:
                wrong.append(f"{rel} imports {imported} (Ray belongs in pipelines/adapter.py)")
    assert wrong == []


def import_graph() -> dict[str, list[str]]:
    modules = sources()
    return {name: sorted({m for i in imports(path) if (m := resolve(i, modules)) and m != name
                          and not name.startswith(m + ".")})  # a package's own __init__ is not a cycle
            for name, path in modules.items()}


def find_cycles(graph: dict[str, list[str]]) -> list[str]:
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" → ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycles():
    graph = import_graph()
    assert "mmbatch.output.commit" in graph["pipelines.run"] or "mmbatch.output.night" in graph["pipelines.run"]
    assert find_cycles(graph) == []


def test_few_modules_stand_directly_in_mmbatch():
    core = sorted(p.name for p in (ROOT / "mmbatch").glob("*.py") if p.name != "__init__.py")
    assert len(core) <= MAX_CORE_MODULES, core


@pytest.mark.parametrize("top", ["mmbatch", "pipelines", "jobs"])
def test_classes_and_functions_stay_small(top):
    big = []
    for path in sorted((ROOT / top).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
                big.append(f"class {node.name} in {path.relative_to(ROOT)}: {lines} lines")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines > MAX_FUNCTION_LINES:
                big.append(f"function {node.name} in {path.relative_to(ROOT)}: {lines} lines")
    assert big == []


def test_the_checks_see_what_they_look_for(tmp_path):
    """The scans are not vacuous: a cycle, a Ray import and a long function in sample code are found."""
    a = tmp_path / "a.py"
    a.write_text("import ray\nfrom mmbatch.output import commit\n\ndef f():\n" + "    x = 1\n" * 70)
    assert {"ray", "mmbatch.output", "mmbatch.output.commit"} <= set(imports(a))
    assert resolve("mmbatch.output.commit.Committer", sources()) == "mmbatch.output.commit"
    func = next(n for n in ast.walk(ast.parse(a.read_text())) if isinstance(n, ast.FunctionDef))
    assert func.end_lineno - func.lineno + 1 > MAX_FUNCTION_LINES
    assert find_cycles({"x": ["y"], "y": ["z"], "z": ["x"], "w": []}) == ["x → y → z → x"]

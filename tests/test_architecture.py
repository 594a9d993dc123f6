"""The house, read from the imports of the tree: layers point down only (jobs → mmbatch.cli →
mmbatch.pipeline → the components), no import cycles, no Ray outside the pipeline's Ray modules
(and the Ray Jobs client of `mmbatch nightly`), few modules directly in mmbatch/, and small classes and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A layer imports only layers below it; a module's layer is that of the longest prefix naming it.
LAYERS = {"jobs": 3, "mmbatch.cli": 2, "mmbatch.pipeline": 1, "mmbatch": 0}
TOPS = ("mmbatch", "jobs")
RAY_ALLOWED = {"mmbatch/pipeline/adapter.py": "the graph onto Ray Data", "mmbatch/pipeline/ray_runtime.py": "Ray's life cycle",
               "mmbatch/pipeline/tally.py": "the progress tally actor",
               "mmbatch/cli/nightly.py": "the Ray Jobs client"}
MAX_CLASS_LINES, MAX_FUNCTION_LINES, MAX_CORE_MODULES, MAX_ARGUMENTS = 200, 60, 10, 6


def sources() -> dict[str, Path]:
    """Module name → file, for the three layers."""
    out = {}
    for top in TOPS:
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


def layer_of(name: str) -> int | None:
    """The layer of a module name (None outside the project)."""
    prefixes = [p for p in LAYERS if name == p or name.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)] if prefixes else None


def test_layers_point_down_and_mmbatch_never_imports_ray():
    modules = sources()
    wrong = []
    for name, path in modules.items():
        layer = layer_of(name)
        rel = path.relative_to(ROOT).as_posix()
        for imported in imports(path):
            if (other := layer_of(imported)) is not None and other > layer:
                wrong.append(f"{rel} imports {imported} (a higher layer)")
            if imported.split(".")[0] == "ray" and rel not in RAY_ALLOWED:
                wrong.append(f"{rel} imports {imported} (Ray belongs in the pipeline's Ray modules)")
    assert wrong == []


def test_no_top_level_pipelines_package():
    """The shipped YAMLs live in pipelines/; the Python code lives under mmbatch/ (no `import pipelines`)."""
    assert not list((ROOT / "pipelines").glob("*.py"))
    assert {"demo.yaml", "tiny.yaml", "video_sentiment.yaml"} <= {p.name for p in (ROOT / "pipelines").glob("*.yaml")}


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
    assert find_cycles(import_graph()) == []


def test_a_run_sees_the_night_through_one_module():
    """The run wires no part of the night's protocol itself: of the night's side (night/, tables/,
    output/, readers/) it imports `mmbatch.night.night` alone."""
    sides = ("mmbatch.night", "mmbatch.tables", "mmbatch.output", "mmbatch.readers")
    seen = {m for m in import_graph()["mmbatch.pipeline.run"] if m.startswith(sides)}
    assert seen == {"mmbatch.night.night"}


def required_arguments(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Arguments a call must pass: those without a default, `self` and `cls` not counted."""
    args = node.args
    positional = [a for a in args.posonlyargs + args.args if a.arg not in ("self", "cls")]
    return (len(positional) - len(args.defaults)) + sum(1 for d in args.kw_defaults if d is None)


@pytest.mark.parametrize("top", ["mmbatch", "jobs"])
def test_no_function_requires_more_than_six_arguments(top):
    many = [f"{node.name} in {path.relative_to(ROOT)}: {required_arguments(node)}"
            for path in sorted((ROOT / top).rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and required_arguments(node) > MAX_ARGUMENTS]
    assert many == []


def test_few_modules_stand_directly_in_mmbatch():
    core = sorted(p.name for p in (ROOT / "mmbatch").glob("*.py") if p.name != "__init__.py")
    assert len(core) <= MAX_CORE_MODULES, core


@pytest.mark.parametrize("top", ["mmbatch", "jobs"])
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
    a.write_text("import ray\nfrom mmbatch.night import commit\n\ndef f():\n" + "    x = 1\n" * 70)
    assert {"ray", "mmbatch.night", "mmbatch.night.commit"} <= set(imports(a))
    assert (layer_of("mmbatch.cli.score"), layer_of("mmbatch.pipeline"), layer_of("mmbatch.schema")) == (2, 1, 0)
    assert resolve("mmbatch.night.commit.Committer", sources()) == "mmbatch.night.commit"
    func = next(n for n in ast.walk(ast.parse(a.read_text())) if isinstance(n, ast.FunctionDef))
    assert func.end_lineno - func.lineno + 1 > MAX_FUNCTION_LINES
    assert find_cycles({"x": ["y"], "y": ["z"], "z": ["x"], "w": []}) == ["x → y → z → x"]
    (many,) = ast.parse("def g(self, a, b, c, d, e, f, g, h=1, *, i, j=2): pass").body
    assert required_arguments(many) == 8
    sample = "## Layers\n```\njobs/  x\n  a.py b.py  what\nm/\n  c.py  what\n  d/  more\n    e.py\n  f.py\n```\n"
    assert page_modules(sample) == {"jobs/a.py", "jobs/b.py", "m/c.py", "m/d/e.py", "m/f.py"}


def page_modules(text: str) -> set[str]:
    """The module files the architecture page's tree lists (`mmbatch/decode/stage.py`, ...): a
    line's names run until two spaces; a name ending in / is a folder holding what is indented under it."""
    tree = text.split("## Layers", 1)[1].split("```", 2)[1]
    folders: list[tuple[int, str]] = []  # (indent, path) of the open folders
    found = set()
    for line in tree.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = line.strip().split("  ", 1)[0].split()
        while folders and folders[-1][0] >= indent:
            folders.pop()
        parent = folders[-1][1] if folders else ""
        if names[0].endswith("/"):
            folders.append((indent, parent + names[0]))
        elif all(n.endswith(".py") for n in names):
            found |= {parent + n for n in names}
    return found


def test_the_architecture_page_lists_every_module_and_only_those():
    listed = page_modules((ROOT / "docs" / "architecture.md").read_text())
    modules = {p.relative_to(ROOT).as_posix() for top in TOPS for p in (ROOT / top).rglob("*.py")
               if p.name != "__init__.py"}
    assert sorted(modules - listed) == [] and sorted(listed - modules) == []

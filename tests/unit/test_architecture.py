"""The import graph of every package follows the layers (docs/development.md, "Layers").

    core  <-  components (exporters, forecasters, webhook_receiver, demo, alert_rules, dashboards)
          <-  stack (the orchestrator)            tests/ (and tests/support) on the side

Read with the AST (nothing is imported), module-level AND in-function imports. Fails on:
a cycle; an upward edge (core -> anything of the project; a component -> stack or another
component; anything -> tests); a project import inside a function without the marker comment
``# heavy: <why>``, ``# optional: <why>`` or ``# deferred: <why>`` on its line; a test-only module in a product package.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = "core"
ORCHESTRATOR = "stack"
COMPONENTS = ("exporters", "forecasters", "webhook_receiver", "demo", "alert_rules", "dashboards")
PACKAGES = (CORE, ORCHESTRATOR, *COMPONENTS)
PROJECT = (*PACKAGES, "tests")
MARKER = re.compile(r"#\s*(heavy|optional|deferred):\s*\S")
TEST_ONLY = ("pytest", "_pytest", "tests")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if any(part in ("tests", "__pycache__") for part in path.relative_to(ROOT).parts[1:]):
                continue  # e.g. alert_rules/tests: promtool fixtures, not the package
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str:
    """The project module an imported name lives in (a.b.c -> a.b when c is an attribute)."""
    probe = name
    while probe and probe not in MODULES:
        probe = probe.rpartition(".")[0]
    return probe or name


class Import:
    def __init__(self, module: str, target: str, line: int, in_function: bool, text: str):
        self.module, self.target, self.line, self.in_function, self.text = module, target, line, in_function, text

    def __repr__(self) -> str:
        where = "in a function" if self.in_function else "module level"
        return f"{self.module}:{self.line} -> {self.target} ({where}): {self.text.strip()}"


def _imports(module: str, path: Path) -> list[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{a.name}" if base else a.name for a in child.names]
            for name in names:
                if name.split(".")[0] in PROJECT or name.split(".")[0] in TEST_ONLY:
                    target = _resolve(name) if name.split(".")[0] in PACKAGES else name
                    if target != module:
                        out.append(Import(module, target, child.lineno, in_function,
                                          lines[child.lineno - 1]))
            visit(child, inner)

    visit(ast.parse(source, str(path)), False)
    return out


EDGES = [imp for m, p in MODULES.items() for imp in _imports(m, p)]


def _layer(module: str) -> str:
    return module.split(".")[0]


def _upward(imp: Import) -> str | None:
    src, dst = _layer(imp.module), _layer(imp.target)
    if dst in TEST_ONLY:
        return "a product package imports test code"
    if src == dst:
        return None
    if src == CORE:
        return "core imports nothing of the project"
    if src in COMPONENTS and dst == ORCHESTRATOR:
        return "a component imports the orchestrator"
    if src in COMPONENTS and dst in COMPONENTS:
        return "a component imports another component"
    return None


def test_every_package_is_read():
    assert {_layer(m) for m in MODULES} == set(PACKAGES)
    assert len(EDGES) > 100  # the walk sees the graph (a broken walk would pass every rule)


def test_no_upward_import():
    bad = [f"{imp!r}  [{why}]" for imp in EDGES if (why := _upward(imp))]
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_project_import_inside_a_function_without_a_reason():
    bad = [repr(imp) for imp in EDGES
           if imp.in_function and _layer(imp.target) in PACKAGES and not MARKER.search(imp.text)]
    assert not bad, ("project imports inside functions (import at module level, or say why on the line "
                     "with '# heavy: ...', '# optional: ...' or '# deferred: ...'):\n" + "\n".join(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    scc.append(top)
                    if top == node:
                        break
                if len(scc) > 1:
                    found.append(sorted(scc))
    return found


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in EDGES:
        if imp.target in MODULES:
            graph[imp.module].add(imp.target)
    # a package's __init__ and the submodules it imports are one unit only when a submodule
    # imports the package back: that is a cycle too, so nothing is exempted
    cycles = _cycles(graph)
    detail = []
    for scc in cycles:
        members = set(scc)
        detail.append(" <-> ".join(scc) + "\n    " + "\n    ".join(
            repr(i) for i in EDGES if i.module in members and i.target in members))
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_test_only_in_product_packages():
    bad = [str(p.relative_to(ROOT)) for m, p in MODULES.items()
           if p.name in ("testing.py", "conftest.py") or p.name.startswith("test_")]
    bad += [repr(imp) for imp in EDGES if _layer(imp.target) in TEST_ONLY]
    assert not bad, "test-only code in product packages (move it to tests/support):\n" + "\n".join(bad)

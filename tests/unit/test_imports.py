"""The import graph of src/dispy: no circles between files, and the client and the scheduler
never reach into the node daemon's package.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a circle that
is only typed today becomes a real one with the next refactoring.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _modules() -> dict[str, Path]:
    """Map every module name under src/dispy to its file."""
    found = {}
    for path in sorted((SRC / "dispy").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(base: str, is_package: bool, node: ast.ImportFrom) -> str:
    """Absolute module name that ``from ... import`` names, in the module ``base``."""
    if not node.level:
        return node.module or ""
    parts = base.split(".")
    if not is_package:
        parts.pop()
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of dispy that the file ``path`` imports (the most specific file each names)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = _resolve(name, is_package, node)
            for alias in node.names:
                sub = f"{parent}.{alias.name}"
                targets.add(sub if sub in modules else parent)
    found = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target.startswith("dispy") and target != name:
            found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module that importing ``start`` imports, directly or not."""
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_graph_sees_the_package():
    graph = _graph()
    assert "dispy.client.engine" in graph
    assert "dispy.wire.connection" in graph["dispy.client.engine"]


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_client_and_scheduler_never_import_node():
    graph = _graph()
    for package in ("dispy.client", "dispy.scheduler"):
        for name in graph:
            if name == package or name.startswith(package + "."):
                into_node = {m for m in _reaches(graph, name) if m.startswith("dispy.node")}
                assert not into_node, f"{name} imports {sorted(into_node)}"

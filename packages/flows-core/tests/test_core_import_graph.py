"""flows.core imports no module of its own in a cycle, however lazily or conditionally.

Every import of a flows.core module is an edge of the graph, at module level, inside a
function or under ``if TYPE_CHECKING:``: a lazy import only hides a cycle from the import
order that happens to work. (Importing ``a.b.c`` also runs the package ``a.b``'s ``__init__``
first; those implicit edges are not counted, as a package naturally imports its own modules.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import flows.core

PACKAGE = "flows.core"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of flows.core: its file and whether it is a package's ``__init__``."""
    (root,) = flows.core.__path__
    modules = {}
    for path in sorted(Path(root).rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph() -> dict[str, set[str]]:
    """The flows.core modules each flows.core module imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    # ``from a.b import c`` names the module a.b.c, or something a.b defines.
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:
                        edges.add(submodule)
                    elif source in modules:
                        edges.add(source)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_finder_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_holds_the_imports_of_every_kind():
    graph = import_graph()
    # At module level, relative or absolute, and the layers' own modules.
    assert "flows.core.layers.stepwise" in graph["flows.core.layers.autoregressive"]
    assert "flows.core.transforms.base" in graph["flows.core.layers.stepwise"]
    assert "flows.core.layers.autoregressive" in graph["flows.core.layers"]
    assert len(graph) > 30


def test_flows_core_has_no_import_cycle():
    assert cycles(import_graph()) == []

"""The import structure, read statically: no import cycles among the project's modules, and the
device runtime (edge_runtime/) never imports models/, policy/ or tools/ (DEVELOPERS.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_runtime", "models", "policy", "tools")


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports (any import statement, lazy ones included)."""
    files = {}
    for pkg in PACKAGES:
        for f in (root / pkg).rglob("*.py"):
            parts = f.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[mod].update(t for t in targets if t in files and t != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(module_graph()) == []


def test_the_device_runtime_imports_none_of_the_other_packages():
    bad = [
        (m, t)
        for m, targets in module_graph().items()
        if m.split(".")[0] == "edge_runtime"
        for t in targets
        if t.split(".")[0] != "edge_runtime"
    ]
    assert bad == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert cycles(graph) == expected


def test_the_graph_sees_lazy_imports(tmp_path):
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "__init__.py").write_text("")
    (tmp_path / "policy" / "a.py").write_text("def f():\n    from policy.b import g\n")
    (tmp_path / "policy" / "b.py").write_text("from . import a\n")
    for pkg in ("edge_runtime", "models", "tools"):
        (tmp_path / pkg).mkdir()
    graph = module_graph(tmp_path)
    assert graph["policy.a"] == {"policy.b"} and graph["policy.b"] == {"policy.a", "policy"}
    assert cycles(graph) == [["policy.a", "policy.b"]]

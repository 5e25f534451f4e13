"""The import structure, read statically against docs/architecture.md: every first-party import is
under the `splitrt` namespace, names a module that exists, stays within the import rules of its
part, and no two modules import each other in a cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_runtime", "models", "policy", "tools")
NAMESPACE = "splitrt"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def project_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name (``splitrt.edge_runtime.node.server``) -> its file."""
    files = {}
    for pkg in PACKAGES:
        for f in (root / pkg).rglob("*.py"):
            parts = f.relative_to(root).with_suffix("").parts
            files[".".join([NAMESPACE, *(parts[:-1] if parts[-1] == "__init__" else parts)])] = f
    return files


def imports(f: Path, mod: str) -> list[str]:
    """Every module name an import statement in ``f`` names (lazy ones included), resolved."""
    package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports (any import statement, lazy ones included)."""
    files = project_files(root)
    return {mod: {t for t in imports(f, mod) if t in files and t != mod} for mod, f in files.items()}


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


def import_rules(text: str | None = None) -> dict[str, list[str]]:
    """docs/architecture.md's import-rules table: part -> the parts it may import."""
    text = ARCHITECTURE.read_text() if text is None else text
    block = text.split("<!-- import-rules: begin -->")[1].split("<!-- import-rules: end -->")[0]
    rules = {}
    for line in block.splitlines()[3:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        part = cells[0].strip("`")
        rules[part] = re.findall(r"`([\w.*]+)`", cells[1]) if len(cells) > 1 else []
    return rules


def part_of(module: str, rules: dict[str, list[str]]) -> str | None:
    """The longest part in ``rules`` that ``module`` (``splitrt.x.y...``) belongs to."""
    name = module.removeprefix(NAMESPACE + ".")
    best = None
    for part in rules:
        if (name == part or name.startswith(part + ".")) and (best is None or len(part) > len(best)):
            best = part
    return best


def allowed(source: str, target: str, rules: dict[str, list[str]]) -> bool:
    if source == target:
        return True
    for pattern in rules[source]:
        if target == pattern or (pattern.endswith(".*") and target.startswith(pattern[:-1])):
            return True
    return False


def rule_violations(root: Path = ROOT, rules: dict[str, list[str]] | None = None) -> list[str]:
    rules = import_rules() if rules is None else rules
    files = project_files(root)
    bad = []
    for mod, f in files.items():
        if f.name == "__init__.py" and mod.count(".") == 1:
            continue  # the package roots hold nothing but a docstring
        source = part_of(mod, rules)
        if source is None:
            bad.append(f"{mod}: in no part of docs/architecture.md")
            continue
        for t in imports(f, mod):
            if t.split(".")[0] in PACKAGES:
                bad.append(f"{mod} imports {t}: first-party imports start with {NAMESPACE}.")
            if t.split(".")[0] != NAMESPACE or t not in files:
                continue
            target = part_of(t, rules)
            if target is None and t.count(".") == 1:
                continue  # a package root
            if target is None or not allowed(source, target, rules):
                bad.append(f"{mod} ({source}) imports {t} ({target}): not allowed by docs/architecture.md")
    return bad


def test_every_import_follows_the_architecture():
    assert rule_violations() == []


def test_every_first_party_import_names_a_module_that_exists():
    files = project_files()
    missing = []
    for mod, f in files.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith(NAMESPACE):
                if node.module not in files:
                    missing.append(f"{mod}: from {node.module}")
            elif isinstance(node, ast.Import):
                missing += [
                    f"{mod}: import {a.name}"
                    for a in node.names
                    if a.name.startswith(NAMESPACE + ".") and a.name not in files
                ]
    assert missing == []


def test_the_device_runtime_imports_none_of_the_other_packages():
    """DEVELOPERS.md's rule, checked on its own (the table above could be edited to allow it)."""
    bad = [
        (m, t)
        for m, targets in module_graph().items()
        if m.split(".")[1] == "edge_runtime"
        for t in targets
        if t.split(".")[1] != "edge_runtime"
    ]
    assert bad == []
    assert sum(len(v) for v in module_graph().values()) > 100  # the graph sees the real imports


def test_the_rules_catch_a_forbidden_import_and_a_bare_one(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "edge_runtime" / "node").mkdir()
    (tmp_path / "edge_runtime" / "node" / "__init__.py").write_text("")
    (tmp_path / "edge_runtime" / "node" / "server.py").write_text("from splitrt.policy import sim\n")
    (tmp_path / "policy" / "sim.py").write_text("import edge_runtime\n")
    rules = {"edge_runtime.node": [], "policy.sim": ["edge_runtime.*"]}
    bad = rule_violations(tmp_path, rules)
    assert any("splitrt.edge_runtime.node.server (edge_runtime.node) imports splitrt.policy.sim" in b for b in bad)
    assert any("imports edge_runtime: first-party imports start with splitrt." in b for b in bad)
    assert len(bad) == 2


def test_the_rules_table_names_every_part_once():
    rules = import_rules()
    assert len(rules) >= 20
    for part, targets in rules.items():
        assert part not in targets, part
        for target in targets:
            assert target.endswith(".*") or target in rules, (part, target)


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
    (tmp_path / "policy" / "a.py").write_text("def f():\n    from splitrt.policy.b import g\n")
    (tmp_path / "policy" / "b.py").write_text("from . import a\n")
    for pkg in ("edge_runtime", "models", "tools"):
        (tmp_path / pkg).mkdir()
    graph = module_graph(tmp_path)
    assert graph["splitrt.policy.a"] == {"splitrt.policy.b"}
    assert graph["splitrt.policy.b"] == {"splitrt.policy.a", "splitrt.policy"}
    assert cycles(graph) == [["splitrt.policy.a", "splitrt.policy.b"]]

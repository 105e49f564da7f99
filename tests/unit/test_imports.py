"""The import graph of weir's packages, read with ``ast``: no cycles, nothing imports upward.

Every import counts, wherever it sits (module top, ``if TYPE_CHECKING:``, inside a
function): a cycle hidden behind a lazy or type-only import is still two modules that
each need the other, which means a seam is in the wrong place (CONVENTIONS.md, Shape).
``from pkg import name`` is an import of ``pkg.name`` when that is a module, else of
``pkg``; importing a module does not count as importing its parent package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LAYERS = ("schemas", "engines", "service", "replay")
"""Bottom first: each package may import only those before it (and itself)."""

TOOLS = ("bench", "chaos")
"""Above every layer: they may import any package; no layer may import them."""

KNOWN_CYCLES: list[list[str]] = []
"""Cycles that exist and are being removed elsewhere; any other cycle fails the test."""

Graph = dict[str, set[str]]


def _modules(roots: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under the given top packages."""
    out: dict[str, Path] = {}
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported(tree: ast.Module, name: str, is_package: bool, known: Mapping[str, Path]) -> set[str]:
    """The known modules that module ``name`` imports anywhere in its body."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a non-module `c`
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(roots: tuple[str, ...] = LAYERS + TOOLS) -> Graph:
    """Module -> the first-party modules it imports."""
    known = _modules(roots)
    return {
        name: _imported(
            ast.parse(path.read_text(), filename=str(path)),
            name,
            path.name == "__init__.py",
            known,
        )
        for name, path in known.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import one another (strongly connected, size > 1),
    sorted; Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return sorted(out)


def upward(graph: Mapping[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a higher layer or of a tool."""
    rank = {top: i for i, top in enumerate(LAYERS)}
    bad = []
    for name, targets in sorted(graph.items()):
        mine = rank.get(name.split(".")[0])
        if mine is None:
            continue  # a tool: may import anything
        for target in sorted(targets):
            theirs = rank.get(target.split(".")[0], len(LAYERS))
            if theirs > mine:
                bad.append(f"{name} -> {target}")
    return bad


def test_no_module_imports_itself_back() -> None:
    """No two first-party modules import each other, directly or through others."""
    graph = import_graph()
    assert graph["service.pipeline"], "the graph reads no imports"
    found = [group for group in cycles(graph) if group not in KNOWN_CYCLES]
    assert found == [], "\n".join(
        " <-> ".join(group)
        + ": "
        + "; ".join(f"{a} -> {b}" for a in group for b in sorted(graph[a]) if b in group)
        for group in found
    )


def test_no_layer_imports_upward() -> None:
    """schemas <- engines <- service <- replay: no package imports a later one, or a tool."""
    assert upward(import_graph()) == []


@pytest.mark.parametrize(
    ("graph", "want"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b", "d"}, "b": {"a"}, "d": {"e"}, "e": {"d"}}, [["a", "b"], ["d", "e"]]),
    ],
)
def test_cycles_finds_every_group(graph: dict[str, set[str]], want: list[list[str]]) -> None:
    """The cycle finder reports each group of mutually importing modules, and only those."""
    assert cycles(graph) == want


def test_imports_are_resolved_to_modules(tmp_path: Path) -> None:
    """Type-only, lazy, relative and from-imports all count, resolved to the module named."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from service import base\n"
        "from service.pipeline import Pipeline\n"
        "from .offsets import OffsetTracker\n"
        "if TYPE_CHECKING:\n"
        "    from service.metrics import Metrics\n"
        "def f():\n"
        "    import service.scheduler.edf\n"
    )
    known = dict.fromkeys(
        ("service", "service.base", "service.pipeline", "service.offsets", "service.metrics"),
        tmp_path,
    ) | {"service.scheduler": tmp_path, "service.scheduler.edf": tmp_path}
    got = _imported(ast.parse(source), "service.x", False, known)
    assert got == {
        "service.base",
        "service.pipeline",
        "service.offsets",
        "service.metrics",
        "service.scheduler.edf",
    }


def test_an_upward_import_is_reported() -> None:
    """An engines module importing service, or service importing a tool, is named."""
    graph = {
        "engines.x": {"service.y", "schemas.z"},
        "service.y": {"chaos.q"},
        "bench.b": {"replay"},
    }
    assert upward(graph) == ["engines.x -> service.y", "service.y -> chaos.q"]


def test_test_module_names_are_unique_across_suites() -> None:
    """No two test modules share a file name: pytest (rootdir imports, no packages) refuses to
    collect the second one when the whole suite runs."""
    by_name: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        by_name.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}

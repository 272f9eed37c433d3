"""The import graph of `appservice/` and `bot/`, read from the source (every import, those under
TYPE_CHECKING included: a type is a dependency too): the transport never imports the bot, the
ground floor imports no feature, and there is no import cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("appservice", "bot")

CORE = "bot.core"
"""The ground floor every feature stands on: its modules import one another (and appservice)
only."""


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _module_of(name: str) -> str | None:
    """The module of ours that `name` (a module, or a name in one) is, if any."""
    known = modules()
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        else:
            continue
        for name in names:
            target = _module_of(name)
            if target is not None and target != module:
                yield target


@cache
def graph() -> dict[str, frozenset[str]]:
    return {m: frozenset(_imported(m, p)) for m, p in modules().items()}


def cycles(edges: dict[str, frozenset[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "bot.core.inbox" in edges["bot.core.dispatcher"]
    assert "bot.core.errors" in edges["bot.core.config"]
    assert "bot.context" in edges["bot.events"]
    # An import under TYPE_CHECKING counts: a type is a dependency too.
    assert "bot.blueprints" in edges["bot.tools.permissions"]


def test_the_transport_never_imports_the_bot() -> None:
    wrong = {
        (m, t)
        for m, targets in graph().items()
        if m.split(".")[0] == "appservice"
        for t in targets
        if t.split(".")[0] == "bot"
    }
    assert not wrong


def in_core(module: str) -> bool:
    return module == CORE or module.startswith(CORE + ".")


def test_the_ground_floor_imports_no_feature() -> None:
    core = [m for m in graph() if in_core(m)]
    assert len(core) > 10 and "bot.core.dispatcher" in core
    wrong = {
        (m, t)
        for m in core
        for t in graph()[m]
        if not (in_core(t) or t.split(".")[0] == "appservice")
    }
    assert not wrong, sorted(wrong)


def test_no_import_cycle() -> None:
    assert cycles(dict(graph())) == []


def test_a_cycle_is_found() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert cycles(edges) == [{"a", "b", "c"}]
    assert cycles({"a": frozenset({"b"}), "b": frozenset()}) == []

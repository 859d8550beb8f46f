"""The tree reads as the data flow: imports flow one way between the layers and no module is
part of an import cycle (imports only needed for type checking do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "core", "store", "assistant", "training", "cli")
LAYER = {
    "config": 0,
    "errors": 0,
    "core": 1,
    "store": 2,
    "assistant": 3,
    "training": 4,
    "cli": 5,
    "main": 6,
}
"""A module may import only from its own layer or lower ones."""


def _modules() -> dict[str, Path]:
    found = {"errors": REPO / "errors.py", "main": REPO / "main.py"}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_imports(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n in known}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _runtime_imports(p, set(modules)) - {m} for m, p in modules.items()}


def test_imports_flow_one_way_between_layers() -> None:
    wrong = [
        f"{m} imports {d}"
        for m, deps in _graph().items()
        for d in deps
        if LAYER[d.split(".")[0]] > LAYER[m.split(".")[0]]
    ]
    assert not wrong, (
        "imports must flow config/errors <- core <- store <- assistant <- "
        "training <- cli <- main:\n" + "\n".join(sorted(wrong))
    )


def test_no_module_is_part_of_an_import_cycle() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)

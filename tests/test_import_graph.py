"""The package's imports point one way: no module imports, directly or through others, a module that imports it.

Every ``import`` statement counts (also those inside functions and under ``TYPE_CHECKING``): a circle through a
lazy import is still a circle in the design. A package's ``__init__`` is not counted as imported by its
submodules' imports (Python runs it first, but that is not an arrow of the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "debiaslab"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from a.b import c`` is ``a.b.c`` when that is a module, else ``a.b``)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def import_graph() -> dict[str, set[str]]:
    files = sorted((SRC / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, modules) for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_the_checker_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "debiaslab.run.train" in graph["debiaslab.cli.main"]  # imported inside a function
    assert "debiaslab.data.core" in graph["debiaslab.data.registry"]


def test_no_import_circles() -> None:
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_point_down() -> None:
    """``data``, ``models`` and ``evaluation`` import nothing of each other or of the layers above them."""
    above = (
        "debiaslab.engine",
        "debiaslab.methods",
        "debiaslab.run",
        "debiaslab.deploy",
        "debiaslab.bench",
        "debiaslab.cli",
    )
    bottom = ("debiaslab.data", "debiaslab.models", "debiaslab.evaluation")
    wrong = []
    for module, targets in import_graph().items():
        layer = next((b for b in bottom if module == b or module.startswith(b + ".")), None)
        if layer is None:
            continue
        for target in targets:
            other = next((b for b in bottom if target == b or target.startswith(b + ".")), None)
            if (other is not None and other != layer) or target.startswith(above):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))

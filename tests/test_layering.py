"""Layering: the import graph of cosched's own modules, read from the source with ``ast``.

:func:`import_graph` has an edge ``a -> b`` for every import of cosched module ``b`` written
anywhere in module ``a``: at the top, inside functions, and under ``if TYPE_CHECKING``, since
an import hidden in a function is still a dependency. A package's ``__init__`` is the node
named after the package; the implicit "a submodule needs its package" link is not an edge,
so a package that re-exports its submodules is no cycle. ``from pkg import name`` points at
``pkg.name`` when that is a module, else at ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import cosched

ROOT = Path(cosched.__file__).parent

#: Packages whose modules must not import each other in a circle.
ACYCLIC = ("cosched.ir", "cosched.ops", "cosched.zoo")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The names (modules, or names inside modules) that one import statement reads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names]


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest prefix of dotted ``name`` that is a cosched module, or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path = ROOT) -> nx.DiGraph:
    """Modules of the package at ``root`` as nodes; ``a -> b`` where ``a`` imports ``b``."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    modules = set(files)
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(node, module, path.name == "__init__.py"):
                target = _resolve(name, modules)
                if target is not None and target != module:
                    graph.add_edge(module, target)
    return graph


def _cycles_touching(graph: nx.DiGraph, prefixes: tuple[str, ...]) -> list[list[str]]:
    """Every import circle that passes through a module of one of ``prefixes``."""
    inside = lambda m: any(m == p or m.startswith(p + ".") for p in prefixes)  # noqa: E731
    return [
        sorted(component)
        for component in nx.strongly_connected_components(graph)
        if len(component) > 1 and any(inside(m) for m in component)
    ]


def test_import_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.a import f\n")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from .. import a\nfrom . import c\nimport pkg.sub.c\n")
    (package / "sub" / "c.py").write_text("from pkg.a import f\n")
    graph = import_graph(package)
    assert set(graph.edges) == {
        ("pkg", "pkg.a"), ("pkg.a", "pkg.sub.b"), ("pkg.sub.b", "pkg.a"),
        ("pkg.sub.b", "pkg.sub.c"), ("pkg.sub.c", "pkg.a"),
    }
    assert _cycles_touching(graph, ("pkg.sub",)) == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_cycle_through(package: str) -> None:
    cycles = _cycles_touching(import_graph(), (package,))
    assert not cycles, (
        f"modules of {package} import each other in a circle: {cycles}; move the shared piece "
        "into a lower module, or have the caller pass it in, so one direction remains"
    )

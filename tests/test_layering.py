"""Layering: cosched's layers only look down, and no modules import each other in a circle.

:func:`import_graph` has an edge ``a -> b`` for every import of cosched module ``b`` written
anywhere in module ``a``: at the top, inside functions, and under ``if TYPE_CHECKING``, since
an import hidden in a function is still a dependency. A package's ``__init__`` is the node
named after the package; the implicit "a submodule needs its package" link is not an edge,
so a package that re-exports its submodules is no cycle. ``from pkg import name`` points at
``pkg.name`` when that is a module, else at ``pkg``.

A module may import its own and lower layers (:data:`LAYERS`, the pipeline's order); each
package's ``__init__`` docstring states its place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import cosched

ROOT = Path(cosched.__file__).parent

#: Lowest first; a module belongs to the entry holding it or a package above it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cosched.errors", "cosched.paths", "cosched.cache", "cosched.sizes", "cosched.files"),
    ("cosched.ir", "cosched.ops", "cosched.zoo", "cosched.viz"),
    ("cosched.execution",),                  # how one task or segment runs
    ("cosched.costmodel",),                  # profiling and latency models
    ("cosched.search",),                     # schedules, priced by the cost model
    ("cosched.codegen",),                    # plans: lowering, format, emitted Python
    ("cosched.runtime",),                    # executing plans
    ("cosched.calibration", "cosched.compiled", "cosched.onnx_backend", "cosched.backend"),
    ("cosched.options", "cosched.api"),      # the pipeline wired
    ("cosched.isolated", "cosched.cli", "cosched"),  # surfaces and harnesses; the package root
)


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
    """Modules of the package at ``root`` as nodes; ``a -> b`` (with the ``line``) where
    ``a`` imports ``b``."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    modules = set(files)
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(node, module, path.name == "__init__.py"):
                target = _resolve(name, modules)
                if target is not None and target != module:
                    graph.add_edge(module, target, line=node.lineno)
    return graph


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the most specific entry holding ``module``."""
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS in {__file__}")
    return best[0]


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
    assert sorted(map(sorted, nx.simple_cycles(graph))) == [["pkg.a", "pkg.sub.b"], ["pkg.a", "pkg.sub.b", "pkg.sub.c"]]


def test_every_module_has_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    graph = import_graph()
    upward = [f"{a} (layer {layer_of(a)}, line {graph.edges[a, b]['line']}) imports {b} (layer {layer_of(b)})"
              for a, b in graph.edges if layer_of(b) > layer_of(a)]
    assert not upward, "imports that look up; move the shared piece down or pass it in:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    cycles = sorted(" -> ".join([*c, c[0]]) for c in nx.simple_cycles(import_graph()))
    assert not cycles, ("modules that import each other in a circle; move the shared piece into a lower "
                        "module, or have the caller pass it in:\n" + "\n".join(cycles))


@pytest.mark.parametrize("package", [ROOT, *sorted(p.parent for p in ROOT.glob("*/__init__.py"))],
                         ids=lambda p: p.name)
def test_each_package_states_its_layering(package: Path) -> None:
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    assert "Layering:" in doc, f"{package}/__init__.py: its docstring should say what it may import (Layering: ...)"

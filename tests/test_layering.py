"""The package's layers only look down, and no modules import each other in a circle.

Every import is counted, including those inside functions (a lazy import is still a
dependency). A layer may import its own and lower layers; the order is the pipeline's, and
each package's ``__init__`` docstring states its place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1] / "cosched"

#: lowest first; a module belongs to the first entry that is a prefix of its name
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cosched.errors", "cosched.paths", "cosched.cache"),
    ("cosched.ir", "cosched.ops", "cosched.zoo", "cosched.viz"),
    ("cosched.execution",),                  # how one task or segment runs
    ("cosched.costmodel",),                  # profiling and latency models
    ("cosched.search",),                     # schedules, priced by the cost model
    ("cosched.codegen",),                    # plans: lowering, format, emitted Python
    ("cosched.runtime",),                    # executing plans
    ("cosched.calibration", "cosched.compiled", "cosched.onnx_backend", "cosched.backend"),
    ("cosched.options", "cosched.api"),      # the pipeline wired
    ("cosched.isolated", "cosched.cli", "cosched"),  # surfaces and harnesses
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Module -> module edges for every ``import`` of a cosched module, anywhere in a file."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from pkg import mod` imports pkg.mod when it is a module, else a name of pkg
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                resolved = resolve(target) if target.startswith("cosched") else None
                if resolved and resolved != name:
                    graph.add_edge(name, resolved, line=node.lineno)
    return graph


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "cosched"):
            return index
    if module == "cosched":
        return len(LAYERS) - 1
    raise AssertionError(f"{module} is in no layer; add it to LAYERS in {__file__}")


def test_every_module_has_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    graph = import_graph()
    upward = [f"{a} (layer {layer_of(a)}, line {graph.edges[a, b]['line']}) imports {b} (layer {layer_of(b)})"
              for a, b in graph.edges if layer_of(b) > layer_of(a)]
    assert not upward, "imports that look up:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    cycles = sorted(" -> ".join([*c, c[0]]) for c in nx.simple_cycles(import_graph()))
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(cycles)


@pytest.mark.parametrize("package", [ROOT, *sorted(p.parent for p in ROOT.glob("*/__init__.py"))], ids=lambda p: p.name)
def test_each_package_states_its_layering(package: Path) -> None:
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    assert "Layering:" in doc, f"{package}/__init__.py: its docstring should say what it may import (Layering: ...)"

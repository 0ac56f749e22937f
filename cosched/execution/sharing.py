"""Graphs that share what executors load: weights, traces and onnxruntime sessions.

A server keeps one executor per set of active tenants (:mod:`cosched.runtime.plancache`),
each over the plan's graph cut to those tenants (:func:`cosched.ir.cut.tenant_graph`).
Loaded per graph, every executor would hold its tenants' weights, traces and sessions again,
and memory would grow with the number of plans. A cut graph registered with :func:`share`
has the plan's graph as its :func:`root`; the caches of :mod:`cosched.execution.traced`
(constants and traces) and :mod:`cosched.execution.ort` (sessions) are keyed by the root, so
every executor of a cut reuses what another executor of the same root loaded. This is sound
because a cut keeps the root's tensor names, ops and task ids, and tenants share no tensors:
a task (or a run of tasks) reads and writes the same names in the cut as in the root.
"""

from __future__ import annotations

import weakref

from cosched.ir.graph import Graph

__all__ = ["root", "share"]

_ROOTS: weakref.WeakKeyDictionary[Graph, Graph] = weakref.WeakKeyDictionary()


def share(graph: Graph, parent: Graph) -> Graph:
    """Let ``graph`` (a cut of ``parent``) reuse what executors of ``parent`` load; returns it.
    The cut keeps its root alive (the caches live as long as the root does)."""
    if graph is not parent:
        _ROOTS[graph] = root(parent)
    return graph


def root(graph: Graph) -> Graph:
    """The graph whose caches ``graph`` uses: its root when shared, else itself."""
    return _ROOTS.get(graph, graph)

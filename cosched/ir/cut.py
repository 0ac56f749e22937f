"""A graph cut to some of its tenants: what a plan for an active set of tenants runs over.

Tenants share no tensors, so keeping a tenant's ops, tasks, tensors, weights and constants
and dropping everything else leaves a valid graph. Names and task ids are kept (a task of
the cut is the task of the whole), which is what lets executors of a cut reuse the whole
graph's traces and sessions (:mod:`cosched.execution.sharing`).
"""

from __future__ import annotations

from collections.abc import Iterable

from cosched.errors import ConfigError
from cosched.ir.graph import Graph, frozen_mapping

__all__ = ["checked_tenants", "tenant_graph"]


def tenant_graph(graph: Graph, tenants: Iterable[str]) -> Graph:
    """``graph`` with only ``tenants`` (their ops, tasks, tensors, weights and constants)."""
    keep = checked_tenants(graph.tenant_names, tenants, "the graph")
    return graph.replace(
        tenants=tuple(t for t in graph.tenants if t.name in keep),
        ops=tuple(op for op in graph.ops if op.tenant in keep),
        tasks=tuple(t for t in graph.tasks if t.tenant in keep),
        tensors=frozen_mapping({n: i for n, i in graph.tensors.items() if i.tenant in keep}),
        weights=frozen_mapping({n: w for n, w in graph.weights.items() if w.tenant in keep}),
        constants=frozen_mapping({n: v for n, v in graph.constants.items()
                                  if n in graph.tensors and graph.tensors[n].tenant in keep}),
    )


def checked_tenants(known: Iterable[str], tenants: Iterable[str], what: str) -> frozenset[str]:
    """``tenants`` as a set, when it is a non-empty set of ``known``; else a ConfigError
    naming the unknown ones and ``what`` has."""
    known = tuple(known)
    keep = frozenset([tenants] if isinstance(tenants, str) else tenants)
    unknown = sorted(keep - set(known))
    if unknown:
        raise ConfigError(f"unknown tenant(s) {unknown}: {what} has {list(known)}")
    if not keep:
        raise ConfigError(f"give at least one tenant of {list(known)}")
    return keep

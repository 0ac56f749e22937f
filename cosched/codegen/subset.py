"""A plan for some of a plan's tenants, composed from the plan's own schedule.

When only some tenants have work (a server's active set), running the whole plan would run
every tenant. :func:`subset_plan` keeps the tenants asked for: each stream keeps its tasks of
those tenants in the same order (streams left empty are dropped), and the result is lowered
again over :func:`tenant_graph` (the graph cut to those tenants), so its events, buffers and
issue order are derived and verified as for any plan, not patched. Task ids, providers and
the priority of latency-critical tenants are kept; the predicted timeline is not (it was
for the whole mix).
"""

from __future__ import annotations

from collections.abc import Iterable

from cosched.codegen.lower import lower
from cosched.codegen.plan import Plan
from cosched.errors import ConfigError
from cosched.ir.graph import Graph, frozen_mapping
from cosched.search.schedule import Schedule

__all__ = ["subset_plan", "tenant_graph"]


def tenant_graph(graph: Graph, tenants: Iterable[str]) -> Graph:
    """``graph`` with only ``tenants`` (their ops, tasks, tensors, weights and constants)."""
    keep = _checked(graph.tenant_names, tenants, "the graph")
    return graph.replace(
        tenants=tuple(t for t in graph.tenants if t.name in keep),
        ops=tuple(op for op in graph.ops if op.tenant in keep),
        tasks=tuple(t for t in graph.tasks if t.tenant in keep),
        tensors=frozen_mapping({n: i for n, i in graph.tensors.items() if i.tenant in keep}),
        weights=frozen_mapping({n: w for n, w in graph.weights.items() if w.tenant in keep}),
        constants=frozen_mapping({n: v for n, v in graph.constants.items()
                                  if n in graph.tensors and graph.tensors[n].tenant in keep}),
    )


def subset_plan(plan: Plan, graph: Graph, tenants: Iterable[str]) -> tuple[Plan, Graph]:
    """The plan of ``tenants`` only and the graph it runs over (see the module docstring).
    ``graph`` is the plan's graph. A multi-device plan is refused (not composed yet)."""
    if plan.devices or plan.comms:
        raise ConfigError("a plan for some tenants is composed from one-device plans only; this plan runs on "
                          f"{len(plan.devices)} devices")
    keep = _checked(plan.tenants, tenants, "the plan")
    sub = tenant_graph(graph, keep)
    tenant_of = {t.id: t.tenant for t in plan.tasks}
    streams = [kept for s in plan.streams if (kept := [t for t in s.tasks if tenant_of[t] in keep])]
    providers = {t.provider for t in plan.tasks if t.tenant in keep}
    critical = {tenant_of[t] for s in plan.streams if s.priority < 0 for t in s.tasks} & keep
    method = f"subset of {plan.schedule_method or 'a plan'}"
    return lower(sub, Schedule.single(streams, method), device=plan.device, import_options=plan.import_options,
                 latency_critical=sorted(critical), provider="ort" if providers == {"ort"} else "torch"), sub


def _checked(known: tuple[str, ...], tenants: Iterable[str], what: str) -> frozenset[str]:
    keep = frozenset(tenants)
    unknown = sorted(keep - set(known))
    if unknown:
        raise ConfigError(f"unknown tenant(s) {unknown}: {what} has {list(known)}")
    if not keep:
        raise ConfigError(f"give at least one tenant of {list(known)}")
    return keep

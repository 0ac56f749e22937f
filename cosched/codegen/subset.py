"""A plan for some of a plan's tenants, composed from the plan's own schedule.

When only some tenants have work (a server's active set), running the whole plan would run
every tenant. :func:`subset_plan` keeps the tenants asked for: each stream keeps its tasks of
those tenants in the same order (streams left empty are dropped), and the result is lowered
again over :func:`~cosched.ir.cut.tenant_graph` (the graph cut to those tenants), so its
events, buffers and issue order are derived and verified as for any plan, not patched. Task ids, providers and
the priority of latency-critical tenants are kept; the predicted timeline is not (it was
for the whole mix).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from cosched.codegen.lower import lower
from cosched.codegen.plan import Plan
from cosched.codegen.planformat import ImportOptions
from cosched.errors import ConfigError
from cosched.ir.cut import checked_tenants, tenant_graph
from cosched.ir.graph import Graph
from cosched.search.schedule import Schedule

__all__ = ["cut_import_options", "subset_plan", "tenant_graph"]


def subset_plan(plan: Plan, graph: Graph, tenants: Iterable[str]) -> tuple[Plan, Graph]:
    """The plan of ``tenants`` only and the graph it runs over (see the module docstring).
    ``graph`` is the plan's graph. A multi-device plan is refused (not composed yet)."""
    if plan.devices or plan.comms:
        raise ConfigError("a plan for some tenants is composed from one-device plans only; this plan runs on "
                          f"{len(plan.devices)} devices")
    keep = checked_tenants(plan.tenants, tenants, "the plan")
    sub = tenant_graph(graph, keep)
    tenant_of = {t.id: t.tenant for t in plan.tasks}
    streams = [kept for s in plan.streams if (kept := [t for t in s.tasks if tenant_of[t] in keep])]
    providers = {t.provider for t in plan.tasks if t.tenant in keep}
    critical = {tenant_of[t] for s in plan.streams if s.priority < 0 for t in s.tasks} & keep
    method = f"subset of {plan.schedule_method or 'a plan'}"
    return lower(sub, Schedule.single(streams, method), device=plan.device,
                 import_options=cut_import_options(plan.import_options, keep), latency_critical=sorted(critical),
                 provider="ort" if providers == {"ort"} else "torch"), sub


def cut_import_options(options: ImportOptions | None, tenants: Iterable[str]) -> ImportOptions | None:
    """``options`` with the input shapes of ``tenants`` only (a plan names its own tenants)."""
    if options is None or not options.input_shapes:
        return options
    keep = set(tenants)
    return replace(options, input_shapes={t: v for t, v in options.input_shapes.items() if t in keep} or None)

"""The search for a set of a plan's tenants: what ``compile(serve=True)`` runs per active set.

A server runs, at each dispatch, only the tenants that have requests waiting
(:mod:`cosched.runtime.serve`). The best plan for some of the tenants is not the full plan
with the others left out: with fewer tenants each can have more cores or a stream to itself.
:func:`search_subset` searches a set as :func:`~cosched.search.optimize` searches the whole
mix, over the same costs: the table's graph cut to the set, its tasks renumbered 0..k-1 (the
search's contract, :class:`~cosched.search.CostTable`), and the result mapped back to the
full graph's task ids, so the set's plan runs the same tasks (and reuses the same traces
and sessions) as the full plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from cosched.ir.cut import checked_tenants, tenant_graph
from cosched.search.costtable import CostTable
from cosched.search.optimizer import SearchConfig, SearchResult, optimize
from cosched.search.schedule import Schedule

__all__ = ["SubsetResult", "search_subset", "subset_table"]


@dataclass(frozen=True)
class SubsetResult:
    """A set's search, in the full graph's task ids: ``streams`` and ``timeline`` (task id ->
    predicted (start, end) ms) for lowering; ``result`` is the search's own, in the cut's ids."""

    tenants: frozenset[str]
    schedule: Schedule
    timeline: dict[int, tuple[float, float]]
    result: SearchResult


def subset_table(table: CostTable, tenants: Iterable[str]) -> tuple[CostTable, tuple[int, ...]]:
    """``table`` for ``tenants`` only, its tasks renumbered; and the full graph's id of each
    renumbered task (``ids[new] = old``). In-context latencies and segment costs carry over."""
    keep = checked_tenants(table.tenants, tenants, "the mix")
    cut = tenant_graph(table.graph, tenants)
    tasks = cut.tasks
    ids = tuple(t.id for t in tasks)
    cut = cut.replace(tasks=tuple(replace(t, id=i) for i, t in enumerate(tasks)))
    in_situ = {threads: [values[i] for i in ids] for threads, values in table.in_situ.items()}
    boundaries = {threads: {t: ms for t, ms in per.items() if t in keep} for threads, per in table.boundaries.items()}
    own = table.launch_overhead_ms - table.runtime.dispatch_ms  # the constructor adds the dispatch again
    sub = CostTable(cut, table.model, own, runtime=table.runtime, in_situ=in_situ, boundaries=boundaries)
    return sub, ids


def search_subset(table: CostTable, tenants: Iterable[str], config: SearchConfig) -> SubsetResult:
    """Search ``tenants`` of ``table``'s graph with ``config`` (its SLOs cut to the set; no
    study storage, so a set's trials never mix with the full search's). Best effort: a set
    whose SLOs cannot all be met keeps its best plan, and :attr:`SearchResult.slo_met` says so."""
    keep = checked_tenants(table.tenants, tenants, "the mix")
    sub, ids = subset_table(table, keep)
    cut = replace(config, slo_ms={t: ms for t, ms in config.slo_ms.items() if t in keep}, best_effort=True,
                  storage=None, study_name=None, progress=False)
    result = optimize(sub, cut)
    streams = [[ids[t] for t in stream] for stream in result.schedule.streams]
    timeline = {ids[i]: (result.sim.start[i], result.sim.end[i]) for i in range(len(ids))}
    schedule = Schedule.single(streams, result.schedule.method, **dict(result.schedule.meta))
    return SubsetResult(keep, schedule, timeline, result)

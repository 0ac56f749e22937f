"""Cross-stream synchronisation: the fewest events that order every dependency.

Given a task DAG and the streams running its tasks, :func:`plan_sync` builds the combined
DAG (task dependencies plus stream order), takes its transitive reduction, and prunes the
cross-stream edges left with vector clocks: walking tasks in topological order, each stream
knows the latest task of every other stream it is already ordered after; a candidate edge
u -> v is kept only if neither v's stream clock nor another kept candidate's clock already
covers u. :mod:`cosched.codegen.lower` turns the kept edges into events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import networkx as nx

from cosched.ir.dag import transitive_reduction

__all__ = ["SyncPlan", "plan_sync"]

Clock = list[int]


@dataclass(frozen=True)
class SyncPlan:
    """The synchronisation a set of streams needs.

    ``waits[v]`` lists the tasks (on other streams) whose completion event ``v`` waits for;
    ``clocks[v][s]`` is the index of the latest task of stream ``s`` ordered before the end of
    ``v`` (``-1``: none); ``position[v]`` is ``(stream, index)``.
    """

    waits: Mapping[int, tuple[int, ...]]
    clocks: Mapping[int, tuple[int, ...]]
    position: Mapping[int, tuple[int, int]]

    def happens_before(self, u: int, v: int) -> bool:
        """True when ``u`` is ordered before the end of ``v`` (or is ``v``)."""
        su, iu = self.position[u]
        return self.clocks[v][su] >= iu


def plan_sync(dag: nx.DiGraph, streams: Sequence[Sequence[int]]) -> SyncPlan:
    """The fewest cross-stream waits that order every dependency of ``dag`` (see module doc)."""
    position = {t: (s, i) for s, tasks in enumerate(streams) for i, t in enumerate(tasks)}
    combined = nx.DiGraph()
    combined.add_nodes_from(position)
    combined.add_edges_from(dag.edges())
    for tasks in streams:
        combined.add_edges_from(pairwise(tasks))
    reduced = transitive_reduction(combined)
    clocks: dict[int, Clock] = {}
    waits: dict[int, tuple[int, ...]] = {}
    empty = [-1] * len(streams)
    for v in nx.topological_sort(reduced):
        sv, iv = position[v]
        before = list(clocks[streams[sv][iv - 1]]) if iv else list(empty)
        latest: dict[int, int] = {}
        for u in reduced.predecessors(v):
            su, iu = position[u]
            if su != sv and (su not in latest or iu > position[latest[su]][1]):
                latest[su] = u
        candidates = [u for u in latest.values() if before[position[u][0]] < position[u][1]]
        needed = [
            u for u in candidates
            if not any(clocks[w][position[u][0]] >= position[u][1] for w in candidates if w != u)
        ]
        for u in needed:
            before = [max(a, b) for a, b in zip(before, clocks[u], strict=True)]
        before[sv] = iv
        clocks[v] = before
        waits[v] = tuple(sorted(needed, key=lambda u: position[u]))
    return SyncPlan(waits, {t: tuple(c) for t, c in clocks.items()}, position)

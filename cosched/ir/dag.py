"""Algorithms on dependency DAGs that the stages share (search's chains, codegen's events).

:func:`transitive_reduction` gives the same graph as :func:`networkx.transitive_reduction`,
which walks every node's descendants depth first for every node (O(V * E) in Python); here
reachability is a bitset per node (a Python int) built in reverse topological order, so a
node's successors are tested against the union of their predecessors' reach with a few
word operations. Lowering reduces the task DAG together with the streams' order edges,
whose long chains make networkx's walks long: on a 50-tenant mix (3750 tasks) lowering
took 4.8 s of CPU with networkx and 1.2 s with this (0.02 s against 0.16 s for the task
DAG alone, in the search's chain cover).
"""

from __future__ import annotations

import networkx as nx

__all__ = ["transitive_reduction"]


def transitive_reduction(dag: nx.DiGraph) -> nx.DiGraph:
    """The DAG with every edge removed that a longer path implies (nodes kept, no attributes).

    Raises :class:`networkx.NetworkXUnfeasible` if ``dag`` has a cycle, as networkx does.
    """
    order = list(nx.topological_sort(dag))
    index = {node: i for i, node in enumerate(order)}
    reach = [0] * len(order)  # bit j of reach[i]: order[j] is reachable from order[i]
    kept = []
    for i in range(len(order) - 1, -1, -1):
        node = order[i]
        below = 0
        # In topological order, a successor reachable through another one comes after it,
        # so it is found in the reach of the successors already taken.
        for j in sorted(index[s] for s in dag.successors(node)):
            if not below >> j & 1:
                kept.append((node, order[j]))
                below |= reach[j] | 1 << j
        reach[i] = below
    reduced = nx.DiGraph()
    reduced.add_nodes_from(dag.nodes())
    reduced.add_edges_from(reversed(kept))
    return reduced

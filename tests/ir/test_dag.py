from __future__ import annotations

import random

import networkx as nx
import pytest

from cosched.ir.dag import transitive_reduction


def _random_dag(n: int, p: float, seed: int) -> nx.DiGraph:
    """A random DAG whose node labels are not in topological order."""
    rng = random.Random(seed)
    labels = list(range(n))
    rng.shuffle(labels)
    dag = nx.DiGraph()
    dag.add_nodes_from(labels)
    dag.add_edges_from((labels[i], labels[j]) for i in range(n) for j in range(i + 1, n) if rng.random() < p)
    return dag


@pytest.mark.parametrize(("n", "p", "seed"), [(1, 0.0, 0), (12, 0.3, 1), (60, 0.1, 2), (60, 0.5, 3), (200, 0.03, 4)])
def test_equals_networkx(n, p, seed):
    dag = _random_dag(n, p, seed)
    ours = transitive_reduction(dag)
    theirs = nx.transitive_reduction(dag)
    assert sorted(ours.edges()) == sorted(theirs.edges())
    assert list(ours.nodes()) == list(dag.nodes())


def test_removes_the_implied_edge_and_keeps_the_rest():
    dag = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c"), ("a", "d")])
    assert sorted(transitive_reduction(dag).edges()) == [("a", "b"), ("a", "d"), ("b", "c")]


def test_a_cycle_is_refused():
    with pytest.raises(nx.NetworkXUnfeasible):
        transitive_reduction(nx.DiGraph([(0, 1), (1, 0)]))

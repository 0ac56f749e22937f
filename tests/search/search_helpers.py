"""A tiny deterministic cost model and inline task graphs for the search tests (imported by them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cosched.costmodel.base import CostModel
from cosched.ir.graph import Graph, OpCost, Task
from cosched.search.costtable import CostTable
from cosched.search.synthetic import task_graph


class TableModel(CostModel):
    """Latency from a dict; slowdown = product of pairwise factors (default ``pair_default``)."""

    name = "table"

    def __init__(
        self,
        latency: Mapping[int, float],
        pairs: Mapping[tuple[int, int], float] | None = None,
        pair_default: float = 1.0,
    ) -> None:
        self.latency = dict(latency)
        self.pairs = dict(pairs or {})
        self.pair_default = pair_default

    def predict_task(self, graph: Graph, task: Task) -> float:
        return self.latency[task.id]

    def predict_slowdown(self, graph: Graph, task: Task, co_runners: Sequence[Task]) -> float:
        factor = 1.0
        for other in co_runners:
            key = (min(task.id, other.id), max(task.id, other.id))
            factor *= self.pairs.get(key, self.pair_default)
        return factor


def make_table(
    rows: Sequence[tuple[str, Sequence[int]]],
    latency: Sequence[float],
    pairs: Mapping[tuple[int, int], float] | None = None,
    pair_default: float = 1.0,
) -> CostTable:
    """A CostTable for tasks ``rows[i] = (tenant, preds)`` with the given latencies (ms)."""
    graph = task_graph([(tenant, preds, OpCost(flops=1, bytes_read=1)) for tenant, preds in rows])
    graph.verify()
    model = TableModel(dict(enumerate(latency)), pairs, pair_default)
    return CostTable(graph, model)



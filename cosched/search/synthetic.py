"""Synthetic task graphs and a synthetic cost model, for search benchmarks and tests.

:func:`task_graph` turns a list of ``(tenant, predecessors, cost)`` rows into a valid
:class:`~cosched.ir.graph.Graph` whose tasks are exactly those rows (one op per task), so
search code can be exercised without ONNX models. :func:`random_task_graph` draws layered
random DAGs. :class:`SyntheticCostModel` is a deterministic stand-in for a learned model:
roofline latency, and slowdowns that are large between two compute-bound (or two
memory-bound) tasks and small between a compute-bound and a memory-bound one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from cosched.costmodel.base import CostModel
from cosched.errors import GraphError
from cosched.ir.graph import Graph, Op, OpCost, Task, TenantInfo, TensorInfo, frozen_mapping

__all__ = ["SyntheticCostModel", "random_task_graph", "task_graph"]

Row = tuple[str, Sequence[int], OpCost]


def task_graph(rows: Sequence[Row]) -> Graph:
    """A graph with one single-op task per row; row ``i`` is task ``i``.

    ``rows[i] = (tenant, predecessor task ids, cost)``; predecessors must precede ``i`` and
    belong to the same tenant (tenants share no tensors).
    """
    tenants = list(dict.fromkeys(tenant for tenant, _, _ in rows))
    tensors: dict[str, TensorInfo] = {}
    for name in tenants:
        tensors[f"{name}/x"] = TensorInfo(f"{name}/x", (1,), "float32", name, "input")
    ops, tasks, last = [], [], {}
    for i, (tenant, preds, cost) in enumerate(rows):
        for p in preds:
            if not 0 <= p < i or rows[p][0] != tenant:
                raise GraphError(
                    f"task {i} of tenant {tenant!r} lists predecessor {p}; predecessors must be "
                    "earlier tasks of the same tenant"
                )
        out = f"{tenant}/t{i}"
        tensors[out] = TensorInfo(out, (1,), "float32", tenant)
        inputs = tuple(f"{tenant}/t{p}" for p in preds) or (f"{tenant}/x",)
        ops.append(Op(f"{tenant}/op{i}", "Synthetic", tenant, inputs, (out,), cost=cost))
        tasks.append(Task(i, tenant, (f"{tenant}/op{i}",), name=f"{tenant}/task{i}"))
        last[tenant] = out
    infos = tuple(
        TenantInfo(name, None, "", frozen_mapping(), (("x", f"{name}/x"),), (("y", last[name]),))
        for name in tenants
    )
    return Graph(infos, tuple(ops), frozen_mapping(tensors), tasks=tuple(tasks))


def random_task_graph(
    n_tasks: int, n_tenants: int = 2, seed: int = 0, max_preds: int = 2, width: int = 3
) -> Graph:
    """A random layered DAG of ``n_tasks`` tasks split round-robin among ``n_tenants`` tenants.

    Each task depends on up to ``max_preds`` of the last ``width * max_preds`` tasks of its
    tenant, so tenants are chains with branches, like DNNs. Costs mix compute-bound and
    memory-bound tasks over two orders of magnitude.
    """
    rng = random.Random(seed)
    by_tenant: dict[str, list[int]] = {}
    rows: list[Row] = []
    for i in range(n_tasks):
        tenant = f"m{i % n_tenants}"
        mine = by_tenant.setdefault(tenant, [])
        window = mine[-width * max_preds :]
        k = min(len(window), rng.randint(1, max_preds)) if window else 0
        preds = sorted(rng.sample(window, k)) if k else []
        if window and window[-1] not in preds and rng.random() < 0.6:
            preds = sorted({*preds, window[-1]})
        scale = 10 ** rng.uniform(0, 2)
        if rng.random() < 0.5:
            cost = OpCost(flops=int(scale * 2e9), bytes_read=int(scale * 4e6), bytes_written=0)
        else:
            cost = OpCost(flops=int(scale * 1e7), bytes_read=int(scale * 1e8), bytes_written=0)
        rows.append((tenant, preds, cost))
        mine.append(i)
    return task_graph(rows)


class SyntheticCostModel(CostModel):
    """Roofline latency and class-based interference, computed from each task's OpCost.

    Latency is ``max(flops / peak_flops, bytes / bandwidth) + overhead``. A task's compute
    share is ``I / (I + ridge)`` for intensity ``I``; its slowdown beside co-runners is
    ``1 + strength * sum((c_t c_u + m_t m_u) ** 2)`` over co-runners ``u`` (``m = 1 - c``).
    """

    name = "synthetic"

    def __init__(
        self,
        peak_flops: float = 50e12,
        bandwidth: float = 2e12,
        overhead_ms: float = 0.005,
        strength: float = 0.7,
    ) -> None:
        self.peak_flops = peak_flops
        self.bandwidth = bandwidth
        self.overhead_ms = overhead_ms
        self.strength = strength
        self.ridge = peak_flops / bandwidth
        # Keyed by id(graph); the graph is kept beside the value so that a later graph
        # reusing a freed graph's id never reads its shares.
        self._shares: dict[tuple[int, int], tuple[Graph, float]] = {}

    def identity(self) -> dict[str, Any]:
        return {"kind": self.name, "peak_flops": self.peak_flops, "bandwidth": self.bandwidth,
                "overhead_ms": self.overhead_ms, "strength": self.strength}

    def predict_task(self, graph: Graph, task: Task) -> float:
        cost = graph.task_cost(task)
        seconds = max(cost.flops / self.peak_flops, cost.bytes / self.bandwidth)
        return seconds * 1e3 + self.overhead_ms

    def _compute_share(self, graph: Graph, task: Task) -> float:
        key = (id(graph), task.id)
        hit = self._shares.get(key)
        if hit is None or hit[0] is not graph:
            intensity = graph.task_cost(task).intensity
            hit = self._shares[key] = (graph, intensity / (intensity + self.ridge))
        return hit[1]

    def predict_slowdowns(
        self, graph: Graph, queries: Sequence[tuple[Task, Sequence[Task]]]
    ) -> np.ndarray:
        out = np.empty(len(queries), dtype=np.float64)
        for i, (task, co) in enumerate(queries):
            c = self._compute_share(graph, task)
            d = np.fromiter((self._compute_share(graph, u) for u in co), np.float64, len(co))
            out[i] = 1.0 + self.strength * float(np.sum((c * d + (1 - c) * (1 - d)) ** 2))
        return out

    def predict_slowdown(self, graph: Graph, task: Task, co_runners: Sequence[Task]) -> float:
        c = self._compute_share(graph, task)
        total = 0.0
        for other in co_runners:
            d = self._compute_share(graph, other)
            total += (c * d + (1 - c) * (1 - d)) ** 2
        return 1.0 + self.strength * total

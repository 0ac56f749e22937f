"""summarize(graph): per-tenant and total counts, FLOPs, memory and critical path, as data.

* ``ops``, ``tasks``: counts (``tasks`` is 0 before fusion or import assigns tasks).
* ``flops``, ``bytes_moved``: sums of the analysed op costs (see :mod:`cosched.ir.analysis`).
* ``weight_bytes``: sizes of the tenant's weight tensors, each counted once however many
  ops read it. ``activation_bytes``: sizes of every tensor the tenant's ops produce, except
  outputs of view ops (they alias their input), i.e. the memory needed if nothing were freed.
* ``critical_path_flops``, ``critical_path_nodes``: the heaviest dependency path by FLOPs and
  how many tasks (ops, for a graph without tasks) lie on it. Tenants are independent, so the
  graph's critical path is its heaviest tenant's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cosched.ir.analysis import VIEW_OPS, analyse, cost_by_tenant, longest_paths
from cosched.ir.graph import Graph, OpCost

__all__ = ["GraphSummary", "TenantSummary", "format_summary", "summarize"]

MB = 1e6
GFLOP = 1e9


@dataclass(frozen=True)
class TenantSummary:
    name: str
    ops: int
    tasks: int
    flops: int
    bytes_moved: int
    weight_bytes: int
    activation_bytes: int
    critical_path_flops: float
    critical_path_nodes: int

    @property
    def gflops(self) -> float:
        return self.flops / GFLOP

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (0 when nothing moves)."""
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0


@dataclass(frozen=True)
class GraphSummary:
    tenants: tuple[TenantSummary, ...]
    total: TenantSummary
    #: Whether the critical path was taken over tasks or (for an unfused graph) ops.
    level: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "level": self.level,
            "tenants": [asdict(t) for t in self.tenants],
            "total": asdict(self.total),
        }


def _critical_paths(graph: Graph, level: str) -> dict[str, tuple[float, int]]:
    dag, dist, pred = longest_paths(graph, level="task" if level == "task" else "op")
    best: dict[str, object] = {}
    for node, length in dist.items():
        tenant = dag.nodes[node]["tenant"]
        if tenant not in best or length >= dist[best[tenant]]:
            best[tenant] = node
    result: dict[str, tuple[float, int]] = {}
    for tenant, node in best.items():
        count = 1
        while node in pred:
            node = pred[node]
            count += 1
        result[tenant] = (dist[best[tenant]], count)
    return result


def summarize(graph: Graph) -> GraphSummary:
    """The summary of ``graph``; analyses a copy first if its ops carry no costs."""
    if any(op.cost is None for op in graph.ops):
        graph = analyse(graph)
    level = "task" if graph.tasks else "op"
    costs = cost_by_tenant(graph)
    paths = _critical_paths(graph, level)
    views = {out for op in graph.ops if op.op_type in VIEW_OPS for out in op.outputs}
    counts = {name: [0, 0, 0, 0] for name in graph.tenant_names}  # ops, tasks, weights, acts
    for op in graph.ops:
        counts[op.tenant][0] += 1
    for task in graph.tasks:
        counts[task.tenant][1] += 1
    for info in graph.tensors.values():
        if info.kind == "weight":
            counts[info.tenant][2] += info.nbytes
        elif info.kind == "activation" and info.name not in views:
            counts[info.tenant][3] += info.nbytes
    tenants = tuple(
        _tenant(name, counts[name], costs[name], paths.get(name, (0.0, 0)))
        for name in graph.tenant_names
    )
    heaviest = max(tenants, key=lambda t: t.critical_path_flops, default=None)
    total = TenantSummary(
        "total",
        sum(t.ops for t in tenants),
        sum(t.tasks for t in tenants),
        sum(t.flops for t in tenants),
        sum(t.bytes_moved for t in tenants),
        sum(t.weight_bytes for t in tenants),
        sum(t.activation_bytes for t in tenants),
        heaviest.critical_path_flops if heaviest else 0.0,
        heaviest.critical_path_nodes if heaviest else 0,
    )
    return GraphSummary(tenants, total, level)


def _tenant(name: str, counts: list[int], cost: OpCost, path: tuple[float, int]) -> TenantSummary:
    ops, tasks, weights, acts = counts
    return TenantSummary(name, ops, tasks, cost.flops, cost.bytes, weights, acts, path[0], path[1])


def format_summary(summary: GraphSummary) -> str:
    """A fixed-width table, one row per tenant and a total row, for the CLI."""
    unit = "tasks" if summary.level == "task" else "ops"
    header = ("tenant", "ops", "tasks", "GFLOPs", "FLOP/B", "weights MB", "activations MB",
              f"critical path GFLOPs ({unit})")
    rows = [header]
    for t in (*summary.tenants, summary.total):
        rows.append((
            t.name, str(t.ops), str(t.tasks), f"{t.gflops:.3f}", f"{t.intensity:.1f}",
            f"{t.weight_bytes / MB:.2f}", f"{t.activation_bytes / MB:.2f}",
            f"{t.critical_path_flops / GFLOP:.3f} ({t.critical_path_nodes})",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if k == 0 or k == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)

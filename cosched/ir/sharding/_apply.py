"""Applying splits to a graph, and the splits that apply to a tenant (for the search)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cosched.errors import ConfigError, CoschedError
from cosched.ir.graph import Graph
from cosched.ir.passes import Pass
from cosched.ir.sharding._spec import SplitSpec
from cosched.ir.sharding.embedding import embedding_tables, split_embedding
from cosched.ir.sharding.pipeline import split_pipeline
from cosched.ir.sharding.tensor import split_tensor, tensor_anchors

__all__ = ["Split", "apply_splits", "shard_weights", "split_options"]

_PASSES: Mapping[str, Callable[[Graph, SplitSpec], Graph]] = {
    "pipeline": split_pipeline,
    "tensor": split_tensor,
    "embedding": split_embedding,
}


class Split(Pass):
    """One :class:`SplitSpec` as a pass (verifies its input and result)."""

    def __init__(self, spec: SplitSpec) -> None:
        self.spec = spec
        self.name = "apply_splits"

    def run(self, graph: Graph) -> Graph:
        if self.spec.tenant not in graph.tenant_names:
            raise ConfigError(f"no tenant named {self.spec.tenant!r} to split; tenants are {list(graph.tenant_names)}")
        if any(op.shard is not None for op in graph.ops if op.tenant == self.spec.tenant):
            raise ConfigError(f"tenant {self.spec.tenant!r} is split already; give one split per tenant")
        if graph.tasks and any(len(task.ops) > 1 for task in graph.tasks):
            raise ConfigError("splits apply to an unfused graph (one task per op); split before cosched.ir.fuse")
        return _PASSES[self.spec.kind](graph, self.spec)


def apply_splits(graph: Graph, specs: Sequence[SplitSpec]) -> Graph:
    """``graph`` (imported, unfused) with every split of ``specs`` applied, in order; at most
    one per tenant. The result verifies and has one task per op: fuse and analyse it next."""
    seen: set[str] = set()
    for spec in specs:
        if spec.tenant in seen:
            raise ConfigError(f"two splits of tenant {spec.tenant!r}; give one split per tenant")
        seen.add(spec.tenant)
        graph = Split(spec)(graph)
    return graph


def split_options(graph: Graph, tenant: str, world: int) -> list[SplitSpec]:
    """The splits of ``tenant`` over ``world`` shards that apply to ``graph`` (each checked
    by applying it): pipeline; tensor; embedding row-wise, and table-wise when the tenant has
    at least ``world`` tables."""
    graph.tenant(tenant)
    candidates = [SplitSpec("pipeline", tenant, world)]
    if tensor_anchors(graph, tenant, world):
        candidates.append(SplitSpec("tensor", tenant, world))
    if embedding_tables(graph, tenant, world):
        candidates.append(SplitSpec("embedding", tenant, world, {"mode": "row"}))
    if len(embedding_tables(graph, tenant, 1)) >= world:
        candidates.append(SplitSpec("embedding", tenant, world, {"mode": "table"}))
    usable = []
    for spec in candidates:
        try:
            Split(spec)(graph)
        except CoschedError:
            continue
        usable.append(spec)
    return usable


def shard_weights(graph: Graph, tenant: str) -> dict[int, tuple[str, ...]]:
    """The weights each shard slot of split tenant ``tenant`` reads (sorted names): what a
    device running that slot loads. A tenant that is not split is all slot 0."""
    graph.tenant(tenant)
    found: dict[int, set[str]] = {}
    for op in graph.ops:
        if op.tenant == tenant:
            names = found.setdefault(op.shard or 0, set())
            names.update(i for i in op.inputs if i in graph.weights)
    return {shard: tuple(sorted(names)) for shard, names in sorted(found.items())}

"""Pipeline split: a tenant's ops cut into ``world`` contiguous stages, stage s on shard s.

The ops are taken in the graph's topological order, so every tensor flows forward: one
``Transfer`` per tensor and later stage that reads it (from the stage that makes it, or from
slot 0 for a graph input). Cuts come from ``options["cuts"]`` (the index, in the tenant's op
order, of the first op of stages 1..world-1), else they balance the analysed cost of the
stages: by FLOPs (``options["balance"] = "flops"``, the default) or by weight bytes
(``"params"``), each stage's share as near ``1/world`` of the total as contiguous cuts allow.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from cosched.errors import ConfigError
from cosched.ir.analysis import op_cost
from cosched.ir.graph import Graph, Op
from cosched.ir.sharding._rewrite import Rewriter
from cosched.ir.sharding._spec import SplitSpec

__all__ = ["balanced_cuts", "split_pipeline"]

_OPTIONS = frozenset({"cuts", "balance"})


def balanced_cuts(weights: Sequence[float], world: int) -> list[int]:
    """``world - 1`` increasing cut indices into ``weights`` (each stage non-empty) whose
    stage sums are near ``total / world``: cut k goes where the running sum first reaches
    ``k * total / world``."""
    n = len(weights)
    running = list(itertools.accumulate(float(w) for w in weights))
    total = running[-1] if running else 0.0
    cuts: list[int] = []
    for k in range(1, world):
        target = total * k / world
        cut = bisect.bisect_left(running, target) + 1 if total > 0 else round(n * k / world)
        low = (cuts[-1] + 1) if cuts else 1
        cuts.append(min(max(cut, low), n - (world - k)))
    return cuts


def _cuts(graph: Graph, spec: SplitSpec, ops: Sequence[Op]) -> list[int]:
    what = f"pipeline split of tenant {spec.tenant!r}"
    if "cuts" in spec.options:
        cuts = spec.options["cuts"]
        if (not isinstance(cuts, tuple) or len(cuts) != spec.world - 1
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in cuts)
                or list(cuts) != sorted(set(cuts)) or cuts[0] < 1 or cuts[-1] >= len(ops)):
            raise ConfigError(f"{what}: cuts must be {spec.world - 1} increasing op indices in 1..{len(ops) - 1} "
                              f"(the first op of each stage after the first), got {spec.options['cuts']!r}")
        return list(cuts)
    balance = spec.options.get("balance", "flops")
    if balance not in ("flops", "params"):
        raise ConfigError(f"{what}: balance must be 'flops' or 'params', got {balance!r}")
    costs = [op_cost(graph, op) for op in ops]
    weights = [c.flops if balance == "flops" else c.param_bytes for c in costs]
    return balanced_cuts(weights, spec.world)


def split_pipeline(graph: Graph, spec: SplitSpec) -> Graph:
    """``graph`` with tenant ``spec.tenant`` cut into ``spec.world`` pipeline stages."""
    unknown = sorted(set(spec.options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"pipeline split of tenant {spec.tenant!r}: unknown option(s) {unknown}; "
                          f"known: {sorted(_OPTIONS)}")
    ops = [op for op in graph.ops if op.tenant == spec.tenant]
    if len(ops) < spec.world:
        raise ConfigError(f"pipeline split of tenant {spec.tenant!r}: it has {len(ops)} ops, too few for "
                          f"{spec.world} stages (world must be at most {len(ops)})")
    cuts = _cuts(graph, spec, ops)
    rewriter = Rewriter(graph, spec.tenant)
    for index, op in enumerate(ops):
        rewriter.place(op, bisect.bisect_right(cuts, index))
    return rewriter.finish()

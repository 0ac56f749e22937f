"""Fusion: coarsen the op graph into tasks, the unit the scheduler places on one stream.

A task's ops run back to back on one stream, so fusing trades concurrency the scheduler
could exploit for fewer launches and synchronisations. The rules are those of epilogue
fusion in inference compilers:

1. Ops fall into kinds (:func:`op_kind`): **anchors** (Conv, ConvTranspose, Gemm, MatMul,
   Einsum, pooling, LayerNormalization and other non-elementwise normalisations, Softmax,
   reductions), **elementwise** ops (arithmetic, activations, BatchNormalization, Cast,
   Dropout, Where, ...), **views** (Reshape, Flatten, Squeeze, Unsqueeze, Identity,
   Transpose), **data movement** (Concat, Gather, Slice, Pad, Expand, Resize, ...), and
   **opaque** ops (everything else: unknown op types, other domains, Shape, control flow).
2. An elementwise or view op joins the task of the op that produces its data input, unless
   that task starts with an opaque op. Its other inputs may be weights, constants, graph
   inputs, or any tensor already computed (the shortcut of a residual Add). Anchors, data
   movement and opaque ops always start a new task. So an anchor absorbs a following chain
   (Conv+BatchNormalization+Relu, MatMul+Add+Gelu, Conv+Add(residual)+Relu), chains of
   elementwise ops fuse together, and views fuse into their producer.
3. A tensor produced inside a task may be read by other ops only if they all join the same
   task: an op whose output has two consumers ends its task unless both consumers fuse
   into it (the exporters' GELU ``x*0.5*(1+erf(x/sqrt 2))`` and SiLU ``x*sigmoid(x)`` read
   ``x`` twice and stay one task). Only the last op of a task feeds other tasks or
   writes a graph output.
4. Tasks never span tenants or shards (:attr:`Op.shard`; a communication op, being opaque,
   is alone in its task), and the task DAG stays acyclic (every task is convex: no path
   leaves it and comes back).

The algorithm is linear in the size of the graph. Pass 1 walks the ops in topological
order and grows groups; each group is numbered when created and an op joins only the
highest-numbered group among its inputs' producers, so every dependency between groups runs
from a lower to a higher number and no cycle can form (a conservative test: a fusion that
would need a reachability query is skipped). Pass 2 walks each group backwards and cuts it
where a tensor is read outside the segment that produces it (rule 3); cutting a convex
group into topologically ordered segments keeps the DAG acyclic. Tasks are numbered
0..n-1 in a topological order of the task DAG: groups in creation order, segments in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from cosched.ir.analysis import PER_ELEMENT, VIEW_OPS
from cosched.ir.graph import SEP, Graph, Op, Task
from cosched.ir.passes import Pass

__all__ = ["Fuse", "OpKind", "fuse", "op_kind", "task_name"]


class OpKind(Enum):
    ANCHOR = "anchor"
    ELEMENTWISE = "elementwise"
    VIEW = "view"
    MOVEMENT = "movement"
    OPAQUE = "opaque"


_ANCHORS = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "Gemm", "MatMul", "MatMulInteger", "Einsum",
    "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
    "MeanVarianceNormalization", "RMSNormalization", "LRN", "Softmax", "LogSoftmax", "Hardmax",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "CumSum",
})
_ELEMENTWISE = (frozenset(PER_ELEMENT) - _ANCHORS) | {
    "Sum", "Max", "Min", "Mean", "Cast", "CastLike", "Dropout",
}
_VIEWS = VIEW_OPS | {"Transpose"}
_MOVEMENT = frozenset({
    "Concat", "Gather", "GatherElements", "GatherND", "Slice", "Split", "Pad", "Expand",
    "Tile", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "ScatterND",
    "ScatterElements", "Trilu",
})
_ABSORBED = frozenset({OpKind.ELEMENTWISE, OpKind.VIEW})


def op_kind(op: Op) -> OpKind:
    """The fusion kind of an op (see the module docstring)."""
    if op.domain not in ("", "ai.onnx"):
        return OpKind.OPAQUE
    for kind, types in ((OpKind.ANCHOR, _ANCHORS), (OpKind.ELEMENTWISE, _ELEMENTWISE),
                        (OpKind.VIEW, _VIEWS), (OpKind.MOVEMENT, _MOVEMENT)):
        if op.op_type in types:
            return kind
    return OpKind.OPAQUE


def _grow_groups(graph: Graph) -> list[list[int]]:
    """Pass 1: groups of op positions; dependencies only run from lower to higher groups."""
    position = {op.name: i for i, op in enumerate(graph.ops)}
    group_of: list[int] = []
    groups: list[list[int]] = []
    for i, op in enumerate(graph.ops):
        target = -1
        if op_kind(op) in _ABSORBED:
            producers = (graph.producer(name) for name in op.inputs if name)
            target = max((group_of[position[p.name]] for p in producers if p is not None), default=-1)
            if target >= 0:
                head = graph.ops[groups[target][0]]
                if op_kind(head) is OpKind.OPAQUE or head.tenant != op.tenant or head.shard != op.shard:
                    target = -1
        if target < 0:
            target = len(groups)
            groups.append([])
        groups[target].append(i)
        group_of.append(target)
    return groups


def _split_group(graph: Graph, members: Sequence[int], outputs: frozenset[str]) -> list[list[int]]:
    """Pass 2: cut a group where a tensor is read outside the segment that produces it.

    A graph output counts as read outside, so it is always its task's last op's output.
    """
    segment_of: dict[str, int] = {}
    segments: list[list[int]] = []
    for i in reversed(members):
        op = graph.ops[i]
        current = len(segments) - 1
        readers = (c.name for out in op.outputs if out for c in graph.consumers(out))
        escapes = any(out in outputs for out in op.outputs)
        if not segments or escapes or not all(segment_of.get(r) == current for r in readers):
            segments.append([])
            current += 1
        segments[current].append(i)
        segment_of[op.name] = current
    return [segment[::-1] for segment in reversed(segments)]


def _short(op: Op) -> str:
    prefix = op.tenant + SEP
    return op.name[len(prefix):] if op.name.startswith(prefix) else op.name


def task_name(ops: Sequence[Op]) -> str:
    """A readable task name: ``tenant/first+second+third`` or ``tenant/first+..N..+last``."""
    shorts = [_short(op) for op in ops]
    if len(shorts) > 3:
        shorts = [shorts[0], f"..{len(shorts) - 2}..", shorts[-1]]
    return f"{ops[0].tenant}{SEP}{'+'.join(shorts)}"


class Fuse(Pass):
    """Replaces the graph's tasks with fused ones (existing tasks are ignored)."""

    name = "fuse"

    def run(self, graph: Graph) -> Graph:
        tasks: list[Task] = []
        outputs = frozenset(name for t in graph.tenants for _, name in t.outputs)
        for group in _grow_groups(graph):
            for segment in _split_group(graph, group, outputs):
                ops = [graph.ops[i] for i in segment]
                tasks.append(Task(len(tasks), ops[0].tenant, tuple(op.name for op in ops), task_name(ops),
                                  ops[0].shard))
        return graph.replace(tasks=tuple(tasks))


def fuse(graph: Graph) -> Graph:
    """A new graph whose tasks are the fused groups of its ops; verifies before and after."""
    return Fuse()(graph)

"""Per-op cost analysis: FLOPs, bytes read and written, parameter bytes; totals; critical path.

:func:`analyse` returns a new graph whose every op carries an :class:`OpCost`. The
conventions, so that numbers from different ops add up and compare:

* **FLOPs.** A multiply-add counts 2 FLOPs. Only arithmetic counts; indexing, copies and
  comparisons of shapes do not.

  ================================  ===============================================================
  op                                FLOPs
  ================================  ===============================================================
  Conv                              2 * numel(Y) * (Cin/group) * prod(kernel)  [+ numel(Y) with bias]
  ConvTranspose                     2 * numel(X) * (Cout/group) * prod(kernel) [+ numel(Y) with bias]
  Gemm                              2*M*N*K [+ M*N if alpha != 1] [+ M*N for C] [+ M*N if beta != 1]
  MatMul (batched, broadcast, 1-D)  2 * numel(Y) * K  (= 2 * prod(batch) * M * N * K)
  Einsum                            P * (operands - 1) [+ P if an index is summed],
                                    P = product of the sizes of all distinct indices
                                    (a two-operand contraction is 2*P, as MatMul)
  MaxPool, AveragePool              numel(Y) * prod(kernel)   (LpPool: twice that)
  Global*Pool, Reduce*, ArgMax/Min  numel(X) per input element  (ReduceL2, SumSquare...: 2 each)
  elementwise, activations, norms   numel(Y) * c, c from :data:`PER_ELEMENT` (e.g. Relu 1,
                                    Sigmoid 4, Gelu 8, BatchNormalization 2, LayerNormalization 8,
                                    Softmax 5); variadic Sum/Max/Min: (inputs - 1) per element
  Resize                            nearest 0, linear 2 * 2**r, cubic 2 * 4**r per output
                                    element (r = number of resized axes)
  data movement (Reshape, Concat,   0
  Gather, Slice, Transpose, Cast...)
  anything else (unknown op types,  0 -- never an error; its bytes still count
  other domains)
  ================================  ===============================================================

  BatchNormalization counts 2 per element because at inference it is an affine map
  ``x * a + b`` whose per-channel ``a, b`` are computed once.

* **Bytes.** ``bytes_read`` is the sum of the op's distinct input tensors' sizes, weights
  and constants included (a tensor read twice by one op counts once); ``bytes_written`` the
  sum of its outputs' sizes. View ops (:data:`VIEW_OPS`: Reshape, Flatten, Squeeze,
  Unsqueeze, Identity) move nothing and count 0 bytes both ways; Shape and Size read only
  metadata (0 bytes read); selecting ops (:data:`SELECT_OPS`: Gather, GatherElements,
  GatherND, Slice) read from their data input (input 0) only as many elements as they
  write, never more than it holds (an embedding lookup reads its rows, not the table).
* **Communication ops** (:attr:`Op.is_comm`: Transfer, AllReduce, AllGather, AllToAll)
  do no arithmetic: 0 FLOPs, ``bytes_read`` the bytes the op's shard sends (a Transfer's
  input; a collective's own rank's input, ``inputs[rank]``) and ``bytes_written`` the bytes
  it receives into its output, so that a communication model can price them.
* **Parameter bytes**: the sizes of the op's distinct inputs of kind ``"weight"``.

Graph and tenant totals are sums over ops. Arithmetic intensity is FLOPs per byte moved
(:attr:`OpCost.intensity`). :func:`critical_path` is the heaviest dependency path through
the op or task DAG, by FLOPs or any per-node weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cache
from typing import Literal

import networkx as nx
import numpy as np

from cosched.errors import GraphError, ShapeError
from cosched.ir.graph import Graph, Op, OpCost, Task, TensorInfo
from cosched.ir.passes import Pass

__all__ = [
    "PER_ELEMENT",
    "SELECT_OPS",
    "VIEW_OPS",
    "Analyse",
    "analyse",
    "cost_by_tenant",
    "critical_path",
    "longest_paths",
    "op_cost",
    "op_flops",
    "total_cost",
]

#: Ops that only reinterpret their input's shape: no FLOPs, no bytes.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})

#: FLOPs per output element of elementwise ops, activations and normalisations.
PER_ELEMENT: Mapping[str, int] = {
    **dict.fromkeys(
        ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "Relu", "Abs", "Neg", "Sqrt", "Reciprocal",
         "Exp", "Log", "Erf", "Sin", "Cos", "Tan", "Floor", "Ceil", "Round", "Sign",
         "ThresholdedRelu", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And",
         "Or", "Xor", "Not", "Where", "IsNaN", "IsInf", "BitShift", "Hardmax", "Shrink"),
        1,
    ),
    **dict.fromkeys(("Clip", "LeakyRelu", "PRelu", "BatchNormalization",
                     "QuantizeLinear", "DequantizeLinear"), 2),
    **dict.fromkeys(("Elu", "Celu", "Softplus", "Softsign", "LpNormalization"), 3),
    **dict.fromkeys(("Sigmoid", "Selu", "HardSigmoid"), 4),
    **dict.fromkeys(("Tanh", "HardSwish", "Softmax", "LogSoftmax", "RMSNormalization"), 5),
    "Mish": 7,
    **dict.fromkeys(("Gelu", "LayerNormalization", "InstanceNormalization",
                     "GroupNormalization", "MeanVarianceNormalization"), 8),
}

#: Variadic elementwise ops: (inputs - 1) FLOPs per output element (Mean: one more).
_VARIADIC = frozenset({"Sum", "Max", "Min", "Mean"})

#: FLOPs per input element of reductions.
_PER_INPUT_ELEMENT: Mapping[str, int] = {
    **dict.fromkeys(("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                     "ReduceLogSum", "ArgMax", "ArgMin", "CumSum", "GlobalAveragePool",
                     "GlobalMaxPool"), 1),
    **dict.fromkeys(("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp",
                     "GlobalLpPool"), 2),
}

_METADATA_OPS = frozenset({"Shape", "Size"})
#: Ops that read from their data input (input 0) only the elements they write.
SELECT_OPS = frozenset({"Gather", "GatherElements", "GatherND", "Slice"})


# --------------------------------------------------------------------------- FLOP rules
def _shape(graph: Graph, name: str) -> tuple[int, ...]:
    return graph.tensor(name).shape


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _operand(graph: Graph, op: Op, index: int, what: str) -> tuple[int, ...]:
    if len(op.inputs) <= index or not op.inputs[index]:
        raise ShapeError(f"op {op.name!r} ({op.op_type}) has no {what} (input {index})")
    return _shape(graph, op.inputs[index])


def _has_input(op: Op, index: int) -> bool:
    return len(op.inputs) > index and bool(op.inputs[index])


def _conv(graph: Graph, op: Op) -> int:
    y = _numel(_shape(graph, op.outputs[0]))
    w = _operand(graph, op, 1, "weight")
    flops = 2 * y * _numel(w[1:])  # W: (Cout, Cin/group, *kernel)
    return flops + (y if _has_input(op, 2) else 0)


def _conv_transpose(graph: Graph, op: Op) -> int:
    x = _numel(_operand(graph, op, 0, "data input"))
    w = _operand(graph, op, 1, "weight")  # W: (Cin, Cout/group, *kernel)
    bias = _numel(_shape(graph, op.outputs[0])) if _has_input(op, 2) else 0
    return 2 * x * _numel(w[1:]) + bias


def _gemm(graph: Graph, op: Op) -> int:
    a = _operand(graph, op, 0, "input A")
    if len(a) != 2:
        raise ShapeError(f"op {op.name!r} (Gemm): input A must be 2-D, got shape {a}")
    m, n = _shape(graph, op.outputs[0])
    k = a[0] if op.attr("transA", 0) else a[1]
    flops = 2 * m * n * k
    flops += m * n if float(op.attr("alpha", 1.0)) != 1.0 else 0
    if _has_input(op, 2):
        flops += m * n * (2 if float(op.attr("beta", 1.0)) != 1.0 else 1)
    return flops


def _matmul(graph: Graph, op: Op) -> int:
    k = _operand(graph, op, 0, "input A")[-1]
    return 2 * _numel(_shape(graph, op.outputs[0])) * k


def _einsum_labels(term: str, rank: int, op: Op) -> list[str]:
    """Index labels of one operand; an ellipsis becomes right-aligned labels '.0', '.1', ..."""
    if "..." not in term:
        labels = list(term)
    else:
        head, tail = term.split("...")
        n_ellipsis = rank - len(head) - len(tail)
        labels = [*head, *(f".{n_ellipsis - 1 - i}" for i in range(n_ellipsis)), *tail]
    if len(labels) != rank:
        raise ShapeError(f"op {op.name!r} (Einsum): term {term!r} does not match an operand of rank {rank}")
    return labels


def _einsum(graph: Graph, op: Op) -> int:
    equation = str(op.attr("equation", "")).replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    operands = [i for i in op.inputs if i]
    if len(terms) != len(operands):
        raise ShapeError(f"op {op.name!r} (Einsum): equation {equation!r} names {len(terms)} "
                         f"operands but the op has {len(operands)} inputs")
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    for term, name in zip(terms, operands, strict=True):
        shape = graph.tensor(name).shape
        for label, dim in zip(_einsum_labels(term, len(shape), op), shape, strict=True):
            sizes[label] = max(sizes.get(label, 1), dim)
            counts[label] = counts.get(label, 0) + 1
    if arrow:
        broadcast = {label for label in sizes if label.startswith(".")} if "..." in rhs else set()
        kept = broadcast | set(rhs.replace("...", ""))
    else:
        kept = {label for label, c in counts.items() if c == 1 or label.startswith(".")}
    points = _numel(tuple(sizes.values()))
    summed = any(label not in kept for label in sizes)
    return points * (len(operands) - 1) + (points if summed else 0)


def _pool(graph: Graph, op: Op) -> int:
    kernel = op.attr("kernel_shape")
    if not kernel:
        raise ShapeError(f"op {op.name!r} ({op.op_type}) has no kernel_shape attribute")
    per_output = _numel(tuple(int(k) for k in kernel)) * (2 if op.op_type == "LpPool" else 1)
    return _numel(_shape(graph, op.outputs[0])) * per_output


def _resize(graph: Graph, op: Op) -> int:
    mode = op.attr("mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode == "nearest":
        return 0
    x = _operand(graph, op, 0, "data input")
    y = _shape(graph, op.outputs[0])
    resized = sum(1 for a, b in zip(x, y, strict=False) if a != b)
    return _numel(y) * 2 * (4 if mode == "cubic" else 2) ** resized


_RULES: Mapping[str, Callable[[Graph, Op], int]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Einsum": _einsum,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "LpPool": _pool,
    "Resize": _resize,
}


def op_flops(graph: Graph, op: Op) -> int:
    """FLOPs of ``op`` under the conventions of this module; 0 for unknown op types."""
    if op.domain not in ("", "ai.onnx"):
        return 0
    rule = _RULES.get(op.op_type)
    if rule is not None:
        return int(rule(graph, op))
    outputs = [o for o in op.outputs if o]
    if op.op_type in PER_ELEMENT and outputs:
        return PER_ELEMENT[op.op_type] * _numel(_shape(graph, outputs[0]))
    if op.op_type in _VARIADIC and outputs:
        n_in = len([i for i in op.inputs if i])
        per = n_in - 1 + (1 if op.op_type == "Mean" else 0)
        return per * _numel(_shape(graph, outputs[0]))
    if op.op_type in _PER_INPUT_ELEMENT and op.inputs and op.inputs[0]:
        return _PER_INPUT_ELEMENT[op.op_type] * _numel(_shape(graph, op.inputs[0]))
    return 0


@cache
def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def _nbytes(info: TensorInfo) -> int:
    # TensorInfo.nbytes, without numpy's per-call overhead (analysis visits every tensor).
    return math.prod(info.shape) * _itemsize(info.dtype)


def op_cost(graph: Graph, op: Op) -> OpCost:
    """The :class:`OpCost` of one op of ``graph``."""
    if op.is_comm:
        return _comm_cost(graph, op)
    if op.op_type in VIEW_OPS and op.domain in ("", "ai.onnx"):
        return OpCost()
    reads = [graph.tensor(name) for name in dict.fromkeys(i for i in op.inputs if i)]
    written = sum(_nbytes(graph.tensor(o)) for o in op.outputs if o)
    if op.op_type in _METADATA_OPS:
        read = 0
    elif op.op_type in SELECT_OPS and op.inputs and op.inputs[0] and op.outputs and op.outputs[0]:
        data, out = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
        selected = min(math.prod(data.shape), math.prod(out.shape)) * _itemsize(data.dtype)
        read = selected + sum(_nbytes(t) for t in reads if t.name != data.name)
    else:
        read = sum(_nbytes(t) for t in reads)
    params = sum(_nbytes(t) for t in reads if t.kind == "weight")
    return OpCost(op_flops(graph, op), read, written, params)


def _comm_cost(graph: Graph, op: Op) -> OpCost:
    sent = op.inputs[0] if op.op_type == "Transfer" else op.inputs[int(op.attr("rank", 0))]
    written = sum(_nbytes(graph.tensor(o)) for o in op.outputs if o)
    return OpCost(0, _nbytes(graph.tensor(sent)), written, 0)


class Analyse(Pass):
    """Sets :attr:`Op.cost` on every op (replacing any cost already there)."""

    name = "analyse"

    def run(self, graph: Graph) -> Graph:
        return graph.replace(ops=tuple(op.replace(cost=op_cost(graph, op)) for op in graph.ops))


def analyse(graph: Graph) -> Graph:
    """A new graph whose ops carry their :class:`OpCost`; verifies before and after."""
    return Analyse()(graph)


# ---------------------------------------------------------------------------- totals
def _cost_of(op: Op) -> OpCost:
    if op.cost is None:
        raise GraphError(f"op {op.name!r} has no cost; run cosched.ir.analyse(graph) first")
    return op.cost


def cost_by_tenant(graph: Graph) -> dict[str, OpCost]:
    """Summed op costs per tenant, in the graph's tenant order (the graph must be analysed)."""
    totals = {name: OpCost() for name in graph.tenant_names}
    for op in graph.ops:
        totals[op.tenant] = totals[op.tenant] + _cost_of(op)
    return totals


def total_cost(graph: Graph) -> OpCost:
    """Summed op costs of the whole graph (the graph must be analysed)."""
    total = OpCost()
    for cost in cost_by_tenant(graph).values():
        total = total + cost
    return total


# --------------------------------------------------------------------- critical path
Level = Literal["op", "task"]
Weight = Callable[[Op | Task], float]


def _default_level(graph: Graph, level: Level | None) -> Level:
    return level if level is not None else ("task" if graph.tasks else "op")


def _flops_weight(graph: Graph) -> Weight:
    def weight(node: Op | Task) -> float:
        if isinstance(node, Op):
            return float(_cost_of(node).flops)
        return float(sum(_cost_of(op).flops for op in graph.task_ops(node)))

    return weight


def longest_paths(
    graph: Graph, weight: Weight | None = None, *, level: Level | None = None
) -> tuple[nx.DiGraph, dict[object, float], dict[object, object]]:
    """Heaviest path ending at every node: ``(dag, dist, pred)`` with node-weighted lengths.

    ``dist[n]`` is the largest total weight of a path that ends at ``n`` (inclusive);
    ``pred[n]`` is the node before ``n`` on it (absent for a path that starts at ``n``).
    Nodes are op names (``level="op"``) or task ids (``level="task"``; the default when the
    graph has tasks). ``weight`` maps an :class:`Op` or :class:`Task` to its weight; the
    default is its FLOPs, which needs an analysed graph.
    """
    level = _default_level(graph, level)
    weigh = weight or _flops_weight(graph)
    dag = graph.to_networkx(level)
    dist: dict[object, float] = {}
    pred: dict[object, object] = {}
    for node in nx.topological_sort(dag):
        value = graph.op(node) if level == "op" else graph.task(node)
        best = None
        for src in dag.predecessors(node):
            if best is None or dist[src] > dist[best]:
                best = src
        dist[node] = float(weigh(value)) + (dist[best] if best is not None else 0.0)
        if best is not None:
            pred[node] = best
    return dag, dist, pred


def _path_to(node: object, pred: Mapping[object, object]) -> list[object]:
    path = [node]
    while path[-1] in pred:
        path.append(pred[path[-1]])
    return path[::-1]


def critical_path(
    graph: Graph, weight: Weight | None = None, *, level: Level | None = None
) -> tuple[float, list[str]]:
    """The heaviest dependency path: ``(length, names along it)``.

    Names are op names at ``level="op"`` and task names at ``level="task"`` (the default when
    the graph has tasks). See :func:`longest_paths` for ``weight``. An empty graph gives
    ``(0.0, [])``.
    """
    level = _default_level(graph, level)
    _, dist, pred = longest_paths(graph, weight, level=level)
    if not dist:
        return 0.0, []
    end = max(reversed(dist), key=lambda n: dist[n])  # ties: the latest, so zero-cost tails show
    nodes = _path_to(end, pred)
    if level == "op":
        return dist[end], [str(n) for n in nodes]
    return dist[end], [graph.task(n).name or f"task {n}" for n in nodes]  # type: ignore[arg-type]

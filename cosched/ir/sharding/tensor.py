"""Tensor-parallel split of MatMul/Gemm and Conv, as in Megatron-LM.

A *region* starts at an anchor whose weight is split on its output dimension (a column
split: MatMul ``W[:, a:b]``, Gemm ``B`` on its N axis with the matching part of ``C``, Conv
``W[a:b]`` and ``B[a:b]`` for output channels) and carries the split through the chain of
elementwise ops that follows (each the only reader of the previous one's output: Relu, Gelu,
Clip, an Add of a bias sliced to match, ...). Then:

* **pair**: a MatMul/Gemm (not a Conv) whose chain ends in another MatMul (2-D weight) or
  Gemm (``transA = 0``) that reads nothing else: that one is split by rows (its K axis), each
  shard computes a partial product and an ``AllReduce`` sums them into the original output
  (a Gemm's ``beta * C`` is added once, after it, on slot 0);
* **lone**: otherwise an ``AllGather`` on the split axis (the last axis, or a Conv's
  channels) puts the chain's last output back together.

Shard r holds part ``r`` of :func:`~cosched.ir.sharding._rewrite.bounds` (near-equal parts).
Every other op of the tenant runs on slot 0, and an input a shard reads from slot 0 arrives
by ``Transfer``. ``options["ops"]`` names the anchors to split (the first anchor of each
region); without it every MatMul/Gemm/Conv (``group = 1``) with a weight of at least
``world`` columns starts a region, in graph order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cosched.errors import ConfigError, UnsupportedOpError
from cosched.ir.graph import Graph, Op, frozen_mapping
from cosched.ir.sharding._rewrite import Rewriter, bounds, local_ops, short
from cosched.ir.sharding._spec import SplitSpec

__all__ = ["split_tensor", "tensor_anchors"]

_UNARY = frozenset({"Relu", "Gelu", "Tanh", "Sigmoid", "Erf", "Elu", "Celu", "Selu", "LeakyRelu", "Softplus",
                    "Softsign", "HardSigmoid", "HardSwish", "Mish", "Neg", "Abs", "Exp", "Sqrt", "Cast",
                    "Identity", "Clip"})
_BINARY = frozenset({"Add", "Sub", "Mul", "Div"})
_OPTIONS = frozenset({"ops"})


@dataclass
class _Region:
    anchor: Op
    axis: int  # the split axis of the anchor's output (non-negative)
    size: int  # its length
    chain: list[Op] = field(default_factory=list)
    closer: Op | None = None  # the row-split MatMul/Gemm of a pair


def _fixed(graph: Graph, name: str) -> bool:
    return bool(name) and graph.tensor(name).kind in ("weight", "constant")


def _anchor(graph: Graph, op: Op) -> tuple[int, int] | str:
    """(split axis of the output, its size) if ``op`` can be column-split, else why not."""
    if op.domain not in ("", "ai.onnx") or op.op_type not in ("MatMul", "Gemm", "Conv"):
        return f"it is a {op.op_type}; the tensor split takes MatMul, Gemm and Conv"
    if len(op.inputs) < 2 or not _fixed(graph, op.inputs[1]):
        return "its second input is not a weight or constant"
    w = graph.tensor(op.inputs[1]).shape
    out = graph.tensor(op.outputs[0]).shape
    if op.op_type == "Conv":
        if int(op.attr("group", 1)) != 1:
            return f"it is a grouped Conv (group={op.attr('group')}); only group=1 splits by output channels"
        return 1, out[1]
    if len(w) != 2 or len(out) < 2:
        return f"its weight has shape {w} and output {out}; it needs a 2-D weight and an output of rank >= 2"
    if op.op_type == "Gemm" and len(op.inputs) > 2 and op.inputs[2] and not _fixed(graph, op.inputs[2]):
        return "its C input is not a weight or constant"
    return len(out) - 1, out[-1]


def _operand_axis(graph: Graph, other: str, out_rank: int, axis: int, size: int) -> int | str | None:
    """How a broadcast operand follows the split: its axis to slice, None to share, or why not."""
    shape = graph.tensor(other).shape
    k = axis - (out_rank - len(shape))
    if k < 0 or shape[k] == 1:
        return None
    return k if shape[k] == size else f"operand {other!r} of shape {shape} does not broadcast on the split axis"


def _follows(graph: Graph, op: Op, t: str, axis: int, size: int) -> bool:
    """Whether elementwise ``op`` reading ``t`` can run on the split parts of ``t``."""
    if op.domain not in ("", "ai.onnx") or not op.inputs or (op.inputs[0] != t and op.op_type not in _BINARY):
        return False
    if graph.tensor(op.outputs[0]).shape != graph.tensor(t).shape or len(op.outputs) != 1:
        return False
    others = [i for i in op.inputs if i and i != t]
    if op.op_type in _UNARY:
        return op.inputs[0] == t and all(_fixed(graph, i) and graph.tensor(i).numel == 1 for i in others)
    if op.op_type in _BINARY and len(others) == 1 and t in op.inputs:
        rank = len(graph.tensor(t).shape)
        return _fixed(graph, others[0]) and not isinstance(_operand_axis(graph, others[0], rank, axis, size), str)
    return False


def _closer(graph: Graph, op: Op, t: str, size: int) -> bool:
    if op.op_type == "MatMul":
        w = graph.tensor(op.inputs[1]).shape if _fixed(graph, op.inputs[1]) else ()
        return op.inputs[0] == t and len(w) == 2 and w[0] == size
    if op.op_type == "Gemm" and not int(op.attr("transA", 0)) and _fixed(graph, op.inputs[1]):
        w = graph.tensor(op.inputs[1]).shape
        k = w[1] if int(op.attr("transB", 0)) else w[0]
        c_ok = len(op.inputs) < 3 or not op.inputs[2] or _fixed(graph, op.inputs[2])
        return op.inputs[0] == t and k == size and c_ok
    return False


def _region(graph: Graph, anchor: Op, axis: int, size: int) -> _Region:
    region = _Region(anchor, axis, size)
    outputs = {n for t in graph.tenants for _, n in t.outputs}
    t = anchor.outputs[0]
    while t not in outputs and len(readers := graph.consumers(t)) == 1:
        nxt = readers[0]
        if anchor.op_type != "Conv" and nxt.op_type in ("MatMul", "Gemm") and _closer(graph, nxt, t, size):
            region.closer = nxt
            break
        if not _follows(graph, nxt, t, axis, size):
            break
        region.chain.append(nxt)
        t = nxt.outputs[0]
    return region


def tensor_anchors(graph: Graph, tenant: str, world: int) -> list[Op]:
    """The ops of ``tenant`` that start a region by default (see the module docstring)."""
    found: list[Op] = []
    taken: set[str] = set()
    for op in graph.ops:
        if op.tenant != tenant or op.name in taken:
            continue
        how = _anchor(graph, op)
        if isinstance(how, str) or how[1] < world:
            continue
        region = _region(graph, op, *how)
        found.append(op)
        taken.update(o.name for o in (*region.chain, region.closer) if o is not None)
    return found


def _regions(graph: Graph, spec: SplitSpec) -> list[_Region]:
    what = f"tensor split of tenant {spec.tenant!r}"
    unknown = sorted(set(spec.options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {unknown}; known: {sorted(_OPTIONS)}")
    if "ops" in spec.options:
        anchors = local_ops(graph, spec.tenant, spec.options["ops"], "tensor")
    else:
        anchors = tensor_anchors(graph, spec.tenant, spec.world)
        if not anchors:
            raise UnsupportedOpError(f"{what}: no MatMul, Gemm or Conv (group=1) with a weight of at least "
                                     f"{spec.world} output columns; nothing to split into {spec.world}")
    regions: list[_Region] = []
    taken: set[str] = set()
    for op in anchors:
        how = _anchor(graph, op)
        if isinstance(how, str):
            raise UnsupportedOpError(f"{what}: op {op.name!r} cannot be split: {how}")
        if how[1] < spec.world:
            raise ConfigError(f"{what}: op {op.name!r} has {how[1]} output columns on its split axis, fewer than "
                              f"world={spec.world}; use a world of at most {how[1]}")
        region = _region(graph, op, *how)
        members = {o.name for o in (op, *region.chain, region.closer) if o is not None}
        if members & taken:
            raise ConfigError(f"{what}: op {op.name!r} is already part of another split region")
        taken |= members
        regions.append(region)
    return regions


def _shard_op(rw: Rewriter, op: Op, r: int, part: tuple[int, int], region: _Region, swap: dict[str, str]) -> str:
    """Op ``op`` of a region on shard r (holding ``part``): its output is the part's."""
    graph, (a, b) = rw.graph, part
    out = graph.tensor(op.outputs[0])
    rank = len(out.shape)
    inputs = [swap.get(i, i) for i in op.inputs]
    if op is region.anchor:
        if op.op_type == "Conv":  # W (Cout, Cin, *kernel) and B (Cout,) by output channels
            inputs[1:] = [rw.slice(i, 0, a, b) if i else i for i in op.inputs[1:]]
        else:
            trans_b = op.op_type == "Gemm" and int(op.attr("transB", 0))
            inputs[1] = rw.slice(op.inputs[1], 0 if trans_b else 1, a, b)
            if len(inputs) > 2 and inputs[2]:  # Gemm's C, broadcast to (M, N)
                k = _operand_axis(graph, op.inputs[2], rank, region.axis, region.size)
                inputs[2] = inputs[2] if k is None else rw.slice(op.inputs[2], int(k), a, b)
    else:
        for i, name in enumerate(op.inputs):
            if name and name not in swap and _fixed(graph, name) and graph.tensor(name).numel > 1:
                k = _operand_axis(graph, name, rank, region.axis, region.size)
                inputs[i] = name if k is None else rw.slice(name, int(k), a, b)
    shape = list(out.shape)
    shape[region.axis] = b - a
    part_out = rw.activation(f"{short(op.outputs[0])}.s{r}", shape, out.dtype)
    rw.place(op.replace(name=rw.fresh(f"{short(op.name)}.s{r}"), inputs=tuple(inputs), outputs=(part_out,)), r)
    return part_out


def _closer_op(rw: Rewriter, op: Op, r: int, part: tuple[int, int], h: str) -> str:
    graph, (a, b) = rw.graph, part
    out = graph.tensor(op.outputs[0])
    if op.op_type == "MatMul":
        w = rw.slice(op.inputs[1], 0, a, b)
        inputs: tuple[str, ...] = (h, w)
        attrs = op.attrs
    else:
        w = rw.slice(op.inputs[1], 1 if int(op.attr("transB", 0)) else 0, a, b)
        inputs = (h, w)
        attrs = frozen_mapping((k, v) for k, v in op.attrs.items() if k != "beta")
    partial = rw.activation(f"{short(op.outputs[0])}.partial{r}", out.shape, out.dtype)
    rw.place(op.replace(name=rw.fresh(f"{short(op.name)}.s{r}"), inputs=inputs, outputs=(partial,), attrs=attrs), r)
    return partial


def _emit(rw: Rewriter, region: _Region, world: int) -> None:
    parts = bounds(region.size, world)
    ends = []
    for r, part in enumerate(parts):
        swap: dict[str, str] = {}
        for op in (region.anchor, *region.chain):
            swap[op.outputs[0]] = _shard_op(rw, op, r, part, region, swap)
        last = swap[(region.chain or [region.anchor])[-1].outputs[0]]
        ends.append(_closer_op(rw, region.closer, r, part, last) if region.closer is not None else last)
    label = short(region.anchor.name)
    if region.closer is None:
        rw.collective("AllGather", ends, (region.chain or [region.anchor])[-1].outputs[0], f"gather_{label}",
                      {"axis": region.axis})
        return
    closer = region.closer
    out = rw.graph.tensor(closer.outputs[0])
    c = closer.inputs[2] if closer.op_type == "Gemm" and len(closer.inputs) > 2 and closer.inputs[2] else ""
    summed = closer.outputs[0] if not c else rw.activation(f"{short(closer.outputs[0])}.sum", out.shape, out.dtype)
    rw.collective("AllReduce", ends, summed, f"reduce_{label}")
    if c:
        beta = float(closer.attr("beta", 1.0))
        if beta != 1.0:
            c_info = rw.graph.tensor(c)
            scaled = rw.activation(f"{short(c)}.beta", c_info.shape, c_info.dtype)
            k = rw.constant(f"{short(c)}.beta_value", np.asarray(beta, dtype=c_info.dtype))
            rw.place(Op(rw.fresh(f"{short(closer.name)}.beta"), "Mul", rw.tenant, (c, k), (scaled,),
                        opset=closer.opset), 0)
            c = scaled
        rw.place(Op(rw.fresh(f"{short(closer.name)}.bias"), "Add", rw.tenant, (summed, c), (closer.outputs[0],),
                    opset=closer.opset), 0)


def split_tensor(graph: Graph, spec: SplitSpec) -> Graph:
    """``graph`` with tenant ``spec.tenant``'s MatMul/Gemm/Conv regions split over ``spec.world``."""
    regions = _regions(graph, spec)
    starts = {region.anchor.name: region for region in regions}
    inside = {o.name for region in regions for o in (*region.chain, region.closer) if o is not None}
    rw = Rewriter(graph, spec.tenant)
    for op in graph.ops:
        if op.tenant != spec.tenant or op.name in inside:
            continue
        if op.name in starts:
            _emit(rw, starts[op.name], spec.world)
        else:
            rw.place(op, 0)
    return rw.finish()

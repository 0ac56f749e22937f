"""Tensor-parallel split of MatMul/Gemm and Conv, as in Megatron-LM's MLP and attention blocks.

An *anchor* whose data input is whole is column-split: shard r computes part r of its
output (MatMul ``W[:, a:b]``, Gemm ``B`` on its N axis with the matching part of ``C``, Conv
``W[a:b]`` and ``B[a:b]``: output channels). The split then travels forward, op by op, as
long as an op can run on the parts (:func:`_propagate`): elementwise ops (a weight operand
sliced to match, or shared where it broadcasts), Transpose, Reshape (when the parts cover
whole blocks: attention heads), Softmax and LayerNormalization off the split axis, pooling
on channels, and a MatMul of two tensors split on a batch axis (attention scores per head).
An op that reads a tensor split on its contracted axis closes the split: a MatMul/Gemm/Conv
with a weight there is row-split (Gemm's ``C`` and Conv's bias on rank 0 only) and an
``AllReduce`` sums the partial products into the original output; so the Megatron MLP
``MatMul -> Add -> Gelu -> MatMul`` and the attention block ``Q, K, V -> heads -> output
projection`` each cost one AllReduce. Any other op that reads a split tensor, and a graph
output that is split, gets it whole from an ``AllGather`` (a lone Gemm, a Conv followed by
a residual Add).

Parts are near-equal (:func:`~cosched.ir.sharding._rewrite.bounds`); when an anchor's
output is reshaped into blocks (heads) further on, the parts follow block boundaries if
there are at least ``world`` blocks. Ops that read no split tensor run on slot 0, and an
input a shard reads from slot 0 arrives by ``Transfer``. ``options["ops"]`` names the
anchors; without it every MatMul/Gemm/Conv (``group = 1``) with a weight of at least
``world`` output columns whose input is whole is one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosched.errors import ConfigError, UnsupportedOpError
from cosched.ir.graph import Graph, Op, frozen_mapping
from cosched.ir.sharding._layout import Bounds, reshape_axis, scale_bounds, transpose_axis
from cosched.ir.sharding._rewrite import Rewriter, bounds, local_ops, short
from cosched.ir.sharding._spec import SplitSpec

__all__ = ["split_tensor", "tensor_anchors"]

_ELEMENTWISE = frozenset({
    "Relu", "Gelu", "Tanh", "Sigmoid", "Erf", "Elu", "Celu", "Selu", "LeakyRelu", "Softplus", "Softsign",
    "HardSigmoid", "HardSwish", "Mish", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Cast", "Identity",
    "Clip", "Add", "Sub", "Mul", "Div", "Pow", "Where", "Max", "Min", "Sum", "Equal", "Less", "Greater",
    "And", "Or", "Not", "Dropout",
})
_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
_OPTIONS = frozenset({"ops"})


@dataclass(frozen=True)
class _Parts:
    """A tensor held as parts: shard r holds ``bounds[r]`` of ``axis`` as tensor ``names[r]``."""

    axis: int
    bounds: Bounds
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Emit:
    """Run an op on every shard: shard r reads ``inputs[r]``; its output is split on ``axis``
    in ``bounds`` (or, with ``reduce``, is a partial sum of the whole output)."""

    inputs: tuple[tuple[str, ...], ...]
    axis: int = 0
    bounds: Bounds = ()
    reduce: bool = False
    op_type: str | None = None


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


def _block(graph: Graph, op: Op, axis: int) -> int:
    """The block size the parts of ``op``'s output should follow: the size of the inner
    blocks a Reshape further down its elementwise chain cuts the split axis into, else 1."""
    outputs = {n for t in graph.tenants for _, n in t.outputs}
    t = op.outputs[0]
    while t not in outputs and len(readers := graph.consumers(t)) == 1:
        nxt = readers[0]
        if nxt.op_type in _VIEWS:
            moved = reshape_axis(graph.tensor(t).shape, graph.tensor(nxt.outputs[0]).shape, axis)
            return moved[2] if moved is not None else 1
        if nxt.op_type not in _ELEMENTWISE or graph.tensor(nxt.outputs[0]).shape != graph.tensor(t).shape:
            return 1
        t = nxt.outputs[0]
    return 1


def _parts_of(graph: Graph, op: Op, axis: int, size: int, world: int) -> Bounds:
    block = _block(graph, op, axis)
    if size % block or size // block < world:
        block = 1
    return tuple((a * block, b * block) for a, b in bounds(size // block, world))


def tensor_anchors(graph: Graph, tenant: str, world: int) -> list[Op]:
    """Every op of ``tenant`` that can be column-split into ``world`` parts."""
    return [op for op in graph.ops if op.tenant == tenant and not isinstance(how := _anchor(graph, op), str)
            and how[1] >= world]


def _anchors(graph: Graph, spec: SplitSpec) -> set[str]:
    what = f"tensor split of tenant {spec.tenant!r}"
    unknown = sorted(set(spec.options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {unknown}; known: {sorted(_OPTIONS)}")
    if "ops" not in spec.options:
        found = tensor_anchors(graph, spec.tenant, spec.world)
        if not found:
            raise UnsupportedOpError(f"{what}: no MatMul, Gemm or Conv (group=1) with a weight of at least "
                                     f"{spec.world} output columns; nothing to split into {spec.world}")
        return {op.name for op in found}
    named = local_ops(graph, spec.tenant, spec.options["ops"], "tensor")
    for op in named:
        how = _anchor(graph, op)
        if isinstance(how, str):
            raise UnsupportedOpError(f"{what}: op {op.name!r} cannot be split: {how}")
        if how[1] < spec.world:
            raise ConfigError(f"{what}: op {op.name!r} has {how[1]} output columns on its split axis, fewer than "
                              f"world={spec.world}; use a world of at most {how[1]}")
    return {op.name for op in named}


class _TensorSplit:
    """The forward walk of :func:`split_tensor` over one tenant's ops."""

    def __init__(self, graph: Graph, spec: SplitSpec) -> None:
        self.graph, self.world = graph, spec.world
        self.rw = Rewriter(graph, spec.tenant)
        self.parts: dict[str, _Parts] = {}
        self.gathered: set[str] = set()

    def run(self, anchors: set[str]) -> Graph:
        for op in self.graph.ops:
            if op.tenant != self.rw.tenant:
                continue
            split = [i for i in op.inputs if i in self.parts]
            if not split and op.name in anchors:
                self._column(op)
                continue
            emit = self._propagate(op) if split else None
            if emit is not None:
                self._emit(op, emit)
                continue
            for name in split:
                self._gather(name)
            self.rw.place(op, 0)
        for tenant in self.graph.tenants:
            for _, name in tenant.outputs:
                if name in self.parts:
                    self._gather(name)
        return self.rw.finish()

    # ------------------------------------------------------------------ emitting
    def _column(self, op: Op) -> None:
        how = _anchor(self.graph, op)
        if isinstance(how, str):  # named anchors were checked; a default one is always eligible
            raise UnsupportedOpError(f"op {op.name!r} cannot be split: {how}")
        axis, size = how
        parts = _parts_of(self.graph, op, axis, size, self.world)
        rank = len(self.graph.tensor(op.outputs[0]).shape)
        per = []
        for a, b in parts:
            inputs = list(op.inputs)
            if op.op_type == "Conv":  # W (Cout, Cin, *kernel) and B (Cout,) by output channels
                inputs[1:] = [self.rw.slice(i, 0, a, b) if i else i for i in op.inputs[1:]]
            else:
                trans_b = op.op_type == "Gemm" and int(op.attr("transB", 0))
                inputs[1] = self.rw.slice(op.inputs[1], 0 if trans_b else 1, a, b)
                if len(inputs) > 2 and inputs[2]:  # Gemm's C, broadcast to (M, N)
                    inputs[2] = self._operand(op.inputs[2], rank, axis, (a, b), size) or inputs[2]
            per.append(tuple(inputs))
        self._emit(op, _Emit(tuple(per), axis, parts))

    def _emit(self, op: Op, emit: _Emit) -> None:
        out = self.graph.tensor(op.outputs[0])
        results = []
        for r, inputs in enumerate(emit.inputs):
            shape = list(out.shape)
            if not emit.reduce:
                a, b = emit.bounds[r]
                shape[emit.axis] = b - a
            tag = "partial" if emit.reduce else "s"
            result = self.rw.activation(f"{short(op.outputs[0])}.{tag}{r}", shape, out.dtype)
            changes: dict[str, object] = {"name": self.rw.fresh(f"{short(op.name)}.s{r}"), "inputs": inputs,
                                          "outputs": (result,)}
            if emit.op_type is not None:
                changes.update(op_type=emit.op_type, attrs=frozen_mapping(), domain="")
            self.rw.place(op.replace(**changes), r)
            results.append(result)
        if emit.reduce:
            self.rw.collective("AllReduce", results, op.outputs[0], f"reduce_{short(op.name)}")
        else:
            self.parts[op.outputs[0]] = _Parts(emit.axis, emit.bounds, tuple(results))

    def _gather(self, name: str) -> None:
        if name not in self.gathered:
            parts = self.parts[name]
            self.rw.collective("AllGather", list(parts.names), name, f"gather_{short(name)}", {"axis": parts.axis})
            self.gathered.add(name)

    def _operand(self, name: str, out_rank: int, axis: int, part: tuple[int, int], size: int) -> str | None:
        """Whole operand ``name`` of an op whose output (``size`` long on ``axis``) is split
        on ``axis``, for one part: itself where it broadcasts on the axis, its slice where it
        is a weight or constant, None where it cannot follow the split."""
        shape = self.graph.tensor(name).shape
        k = axis - (out_rank - len(shape))
        if k < 0 or shape[k] == 1:
            return name
        if _fixed(self.graph, name) and shape[k] == size:
            return self.rw.slice(name, k, *part)
        return None

    def _broadcasts(self, name: str, out_rank: int, axis: int) -> bool:
        shape = self.graph.tensor(name).shape
        k = axis - (out_rank - len(shape))
        return k < 0 or shape[k] == 1

    # ---------------------------------------------------------------- propagation
    def _propagate(self, op: Op) -> _Emit | None:
        """How ``op``, reading split tensors, runs on the parts; None if it cannot."""
        if op.domain not in ("", "ai.onnx") or len([o for o in op.outputs if o]) != 1 or op.outputs[0] == "":
            return None
        if op.op_type in _ELEMENTWISE:
            return self._elementwise(op)
        data = self.parts.get(op.inputs[0])
        others_split = any(i in self.parts for i in op.inputs[1:])
        if op.op_type in ("MatMul", "Gemm", "Conv"):
            return self._contract(op)
        if data is None or others_split:
            return None
        rank = len(self.graph.tensor(op.inputs[0]).shape)
        if op.op_type == "Transpose":
            return self._same(op, data, transpose_axis(op.attr("perm"), rank, data.axis))
        if op.op_type in _VIEWS:
            return self._view(op, data)
        if op.op_type in ("Softmax", "LogSoftmax"):
            axis = int(op.attr("axis", -1 if op.opset >= 13 else 1)) % rank
            keeps = data.axis != axis if op.opset >= 13 else data.axis < axis
            return self._same(op, data, data.axis) if keeps else None
        if op.op_type == "LayerNormalization":
            return self._same(op, data, data.axis) if data.axis < int(op.attr("axis", -1)) % rank else None
        if op.op_type in _POOLS and data.axis in (0, 1):
            return self._same(op, data, data.axis)
        return None

    def _same(self, op: Op, data: _Parts, axis: int) -> _Emit:
        """``op`` on each part, its other inputs whole; the output split on ``axis`` alike."""
        return _Emit(tuple((name, *op.inputs[1:]) for name in data.names), axis, data.bounds)

    def _view(self, op: Op, data: _Parts) -> _Emit | None:
        src, dst = self.graph.tensor(op.inputs[0]).shape, self.graph.tensor(op.outputs[0]).shape
        moved = reshape_axis(src, dst, data.axis)
        new = scale_bounds(data.bounds, moved[1], moved[2]) if moved is not None else None
        if moved is None or new is None:
            return None
        shapes = []
        for a, b in new:
            shape = list(dst)
            shape[moved[0]] = b - a
            shapes.append((self.rw.constant(f"{short(op.name)}.shape", np.asarray(shape, dtype=np.int64)),))
        inputs = tuple((name, *shape_input) for name, shape_input in zip(data.names, shapes, strict=True))
        return _Emit(inputs, moved[0], new, op_type="Reshape")

    def _elementwise(self, op: Op) -> _Emit | None:
        out_rank = len(self.graph.tensor(op.outputs[0]).shape)
        aligned = {(self.parts[n].axis + out_rank - len(self.graph.tensor(n).shape), self.parts[n].bounds)
                   for n in op.inputs if n in self.parts}
        if len(aligned) != 1:
            return None
        ((axis, parts),) = aligned
        if self.graph.tensor(op.outputs[0]).shape[axis] != parts[-1][1]:
            return None
        per = []
        for r, part in enumerate(parts):
            inputs = []
            for name in op.inputs:
                if name in self.parts:
                    inputs.append(self.parts[name].names[r])
                    continue
                value = self._operand(name, out_rank, axis, part, parts[-1][1]) if name else ""
                if value is None:
                    return None
                inputs.append(value)
            per.append(tuple(inputs))
        return _Emit(tuple(per), axis, parts)

    def _contract(self, op: Op) -> _Emit | None:
        graph = self.graph
        a_name, b_name = op.inputs[0], op.inputs[1]
        pa, pb = self.parts.get(a_name), self.parts.get(b_name)
        ra, rb = len(graph.tensor(a_name).shape), len(graph.tensor(b_name).shape)
        rest = op.inputs[2:]
        if op.op_type == "Conv":
            if pb is not None or pa is None or pa.axis != 1 or int(op.attr("group", 1)) != 1:
                return None
            return self._closer(op, pa, 1, rest)
        if op.op_type == "Gemm":
            k_axis = 0 if int(op.attr("transA", 0)) else 1
            if pb is not None or pa is None or pa.axis != k_axis or not _fixed(graph, b_name):
                return None
            return self._closer(op, pa, 1 if int(op.attr("transB", 0)) else 0, rest)
        if ra < 2 or rb < 2:
            return None
        out_rank = len(graph.tensor(op.outputs[0]).shape)
        if pa is not None and pb is not None:
            oa, ob = pa.axis + out_rank - ra, pb.axis + out_rank - rb
            if oa == ob < out_rank - 2 and pa.bounds == pb.bounds:
                return _Emit(tuple(zip(pa.names, pb.names, strict=True)), oa, pa.bounds)
            return None
        if pa is not None:
            if pa.axis == ra - 1:
                return self._closer(op, pa, rb - 2, ()) if _fixed(graph, b_name) else None
            oa = pa.axis + out_rank - ra
            if oa >= out_rank - 2 or self._broadcasts(b_name, out_rank, oa):
                return _Emit(tuple((n, b_name) for n in pa.names), oa, pa.bounds)
            return None
        assert pb is not None
        ob = pb.axis + out_rank - rb
        if pb.axis == rb - 1 or (ob < out_rank - 2 and self._broadcasts(a_name, out_rank, ob)):
            return _Emit(tuple((a_name, n) for n in pb.names), ob, pb.bounds)
        return None

    def _closer(self, op: Op, data: _Parts, w_axis: int, rest: tuple[str, ...]) -> _Emit:
        """Row split: the weight sliced on its contracted ``w_axis``; ``rest`` (a bias, Gemm's
        C) read by rank 0 only, so it is added once."""
        per = []
        for r, (a, b) in enumerate(data.bounds):
            w = self.rw.slice(op.inputs[1], w_axis, a, b)
            per.append((data.names[r], w, *(rest if r == 0 else ())))
        return _Emit(tuple(per), reduce=True)


def split_tensor(graph: Graph, spec: SplitSpec) -> Graph:
    """``graph`` with tenant ``spec.tenant``'s MatMul/Gemm/Conv split over ``spec.world`` shards."""
    return _TensorSplit(graph, spec).run(_anchors(graph, spec))

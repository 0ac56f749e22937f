"""Reductions and order ops: Reduce*, ArgMax/ArgMin, CumSum, TopK.

Reduce* take ``axes`` as an attribute before opset 13 (ReduceSum) or 18 (the others) and as an
optional input from then on, where ``noop_with_empty_axes=1`` makes empty axes the identity.
Reducing an empty set gives the reduction's identity (0 for sums, 1 for products, -inf/+inf or
the integer limits for max/min, -inf for log-sums).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cosched.ops.implementations.common import (
    check_dtypes,
    from_ordered,
    int_list,
    narrow,
    norm_axis,
    ordered,
    widen,
)
from cosched.ops.registry import OpContext, register

Tensor = torch.Tensor
_Reducer = Callable[[Tensor, list[int]], Tensor]


def _extreme(t: Tensor, dims: list[int], largest: bool) -> Tensor:
    if t.numel() == 0:
        shape = [1 if i in dims else s for i, s in enumerate(t.shape)]
        if t.dtype.is_floating_point:
            fill = float("-inf") if largest else float("inf")
        elif t.dtype == torch.bool:
            fill = not largest
        else:
            info = torch.iinfo(t.dtype)
            fill = info.min if largest else info.max
        return torch.full(shape, fill, dtype=t.dtype, device=t.device)
    if t.dtype == torch.bool:
        return (t.amax(dim=dims, keepdim=True) if largest else t.amin(dim=dims, keepdim=True)).to(torch.bool)
    return t.amax(dim=dims, keepdim=True) if largest else t.amin(dim=dims, keepdim=True)


def _sum(t: Tensor, dims: list[int]) -> Tensor:
    return t.sum(dim=dims, keepdim=True, dtype=t.dtype if t.dtype.is_floating_point else torch.int64)


def _prod(t: Tensor, dims: list[int]) -> Tensor:
    out = t
    for d in dims:
        out = out.prod(dim=d, keepdim=True)
    return out


def _mean(t: Tensor, dims: list[int]) -> Tensor:
    wide = t if t.dtype.is_floating_point else t.to(torch.float64)
    return wide.mean(dim=dims, keepdim=True)


def _float(t: Tensor) -> Tensor:
    return t if t.dtype.is_floating_point else t.to(torch.float64)


_REDUCERS: dict[str, tuple[_Reducer, int]] = {
    # op type -> (reducer on keepdims=True, opset where axes became an input)
    "ReduceSum": (_sum, 13),
    "ReduceMean": (_mean, 18),
    "ReduceMax": (lambda t, d: _extreme(t, d, largest=True), 18),
    "ReduceMin": (lambda t, d: _extreme(t, d, largest=False), 18),
    "ReduceProd": (_prod, 18),
    "ReduceL1": (lambda t, d: _sum(t.abs(), d), 18),
    "ReduceL2": (lambda t, d: torch.sqrt(_sum(_float(t) * _float(t), d)), 18),
    "ReduceSumSquare": (lambda t, d: _sum(t * t, d), 18),
    "ReduceLogSum": (lambda t, d: torch.log(_sum(_float(t), d)), 18),
    "ReduceLogSumExp": (lambda t, d: torch.logsumexp(_float(t), dim=d, keepdim=True), 18),
}


def _reduce(ctx: OpContext, x: Tensor, axes: list[int] | None, reducer: _Reducer) -> Tensor:
    check_dtypes(ctx, x)
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return x
        axes = list(range(x.dim()))
    dims = sorted({norm_axis(ctx, a, x.dim()) for a in axes})
    source = x if x.dtype.is_floating_point or x.dtype == torch.bool else widen(x)
    if source.dtype == torch.bool and ctx.op_type not in ("ReduceMax", "ReduceMin"):
        source = source.to(torch.int64)
    out = reducer(source, dims) if dims else source
    if not int(ctx.attr("keepdims", 1)):
        out = out.squeeze(dims) if dims else out
    return narrow(out, x.dtype)


def _register_reduce(op_type: str, reducer: _Reducer, axes_input_since: int) -> None:
    def with_attr(ctx: OpContext, x: Tensor) -> Tensor:
        axes = ctx.attr("axes")
        return _reduce(ctx, x, None if axes is None else int_list(axes), reducer)

    def with_input(ctx: OpContext, x: Tensor, axes: Tensor | None = None) -> Tensor:
        return _reduce(ctx, x, None if axes is None else int_list(axes), reducer)

    name = op_type[len("Reduce"):].lower()
    with_attr.__qualname__ = with_attr.__name__ = f"reduce_{name}_axes_attr"
    with_input.__qualname__ = with_input.__name__ = f"reduce_{name}_axes_input"
    register(op_type, since=1, until=axes_input_since - 1)(with_attr)
    register(op_type, since=axes_input_since)(with_input)


for _op, (_reducer, _since) in _REDUCERS.items():
    _register_reduce(_op, _reducer, _since)


# ----------------------------------------------------------------------- ArgMax, ArgMin


def _arg(ctx: OpContext, x: Tensor, largest: bool) -> Tensor:
    check_dtypes(ctx, x)
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), x.dim())
    source = ordered(x) if x.dtype != torch.bool else x.to(torch.uint8)
    last = int(ctx.attr("select_last_index", 0))
    if last:
        source = source.flip(axis)
    idx = source.argmax(dim=axis, keepdim=True) if largest else source.argmin(dim=axis, keepdim=True)
    if last:
        idx = x.shape[axis] - 1 - idx
    return idx if int(ctx.attr("keepdims", 1)) else idx.squeeze(axis)


@register("ArgMax", since=1)
def argmax(ctx: OpContext, x: Tensor) -> Tensor:
    return _arg(ctx, x, largest=True)


@register("ArgMin", since=1)
def argmin(ctx: OpContext, x: Tensor) -> Tensor:
    return _arg(ctx, x, largest=False)


# ------------------------------------------------------------------------------- CumSum


@register("CumSum", since=11)
def cumsum(ctx: OpContext, x: Tensor, axis: Tensor) -> Tensor:
    check_dtypes(ctx, x)
    dim = norm_axis(ctx, int_list(axis)[0], x.dim())
    reverse, exclusive = int(ctx.attr("reverse", 0)), int(ctx.attr("exclusive", 0))
    source = widen(x).flip(dim) if reverse else widen(x)
    out = source.cumsum(dim, dtype=source.dtype)
    if exclusive:
        zero = torch.zeros_like(out.narrow(dim, 0, min(1, out.shape[dim])))
        out = torch.cat([zero, out.narrow(dim, 0, max(out.shape[dim] - 1, 0))], dim)
    return narrow(out.flip(dim) if reverse else out, x.dtype)


# --------------------------------------------------------------------------------- TopK


def _topk(ctx: OpContext, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Stable: among equal values the lower index comes first, as ONNX specifies."""
    check_dtypes(ctx, x)
    axis = norm_axis(ctx, int(ctx.attr("axis", -1)), x.dim())
    largest = bool(int(ctx.attr("largest", 1)))
    source = ordered(x) if x.dtype != torch.bool else x.to(torch.uint8)
    values, indices = torch.sort(source, dim=axis, descending=largest, stable=True)
    values, indices = values.narrow(axis, 0, k), indices.narrow(axis, 0, k)
    values = from_ordered(values, x.dtype) if x.dtype != torch.bool else values.to(torch.bool)
    return values, indices


@register("TopK", since=1, until=9)
def topk_attr(ctx: OpContext, x: Tensor) -> tuple[Tensor, Tensor]:
    return _topk(ctx, x, int(ctx.attr("k")))


@register("TopK", since=10)
def topk(ctx: OpContext, x: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    return _topk(ctx, x, int_list(k)[0])

"""Shape and creation ops: Reshape, Flatten, Transpose, (Un)Squeeze, Expand, Tile, Concat,
Split, Shape, Size, Constant, ConstantOfShape, Range, Identity.

Where ONNX moved an attribute to an input (Squeeze/Unsqueeze axes and Split sizes at 13) or
changed an op's arithmetic (Range's float16 ``stash_type`` at 27) each side of the change is
registered separately.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import torch

from cosched.errors import ShapeError, UnsupportedOpError
from cosched.ops.implementations.common import (
    SUPPORTED_DTYPES,
    check_dtypes,
    int_list,
    norm_axis,
)
from cosched.ops.registry import OpContext, register

Tensor = torch.Tensor


# ---------------------------------------------------------------------------- reshaping


@register("Reshape", since=5)
def reshape(ctx: OpContext, x: Tensor, shape: Tensor) -> Tensor:
    """0 copies the input's dim (unless ``allowzero=1``, opset 14+); -1 is inferred."""
    target = int_list(shape)
    allowzero = int(ctx.attr("allowzero", 0)) if ctx.opset >= 14 else 0
    if not allowzero:
        for i, d in enumerate(target):
            if d == 0:
                if i >= x.dim():
                    raise ShapeError(
                        f"op Reshape ({ctx.name!r}): shape {target} copies dim {i} of an input of rank {x.dim()}"
                    )
                target[i] = x.shape[i]
    try:
        return x.reshape(target)
    except RuntimeError as e:
        raise ShapeError(f"op Reshape ({ctx.name!r}): cannot reshape {tuple(x.shape)} to {target}: {e}") from e


@register("Flatten", since=1)
def flatten(ctx: OpContext, x: Tensor) -> Tensor:
    axis = int(ctx.attr("axis", 1))
    axis = axis if axis == x.dim() else norm_axis(ctx, axis, x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Transpose", since=1)
def transpose(ctx: OpContext, x: Tensor) -> Tensor:
    perm = ctx.attr("perm")
    perm = list(range(x.dim()))[::-1] if perm is None else int_list(perm)
    return x.permute(perm)


def _squeeze(ctx: OpContext, x: Tensor, axes: list[int]) -> Tensor:
    if not axes:
        return x.reshape([d for d in x.shape if d != 1])
    dims = {norm_axis(ctx, a, x.dim()) for a in axes}
    for d in dims:
        if x.shape[d] != 1:
            raise ShapeError(f"op Squeeze ({ctx.name!r}): axis {d} has size {x.shape[d]}, expected 1")
    return x.reshape([s for i, s in enumerate(x.shape) if i not in dims])


@register("Squeeze", since=1, until=12)
def squeeze_attr(ctx: OpContext, x: Tensor) -> Tensor:
    return _squeeze(ctx, x, int_list(ctx.attr("axes")))


@register("Squeeze", since=13)
def squeeze(ctx: OpContext, x: Tensor, axes: Tensor | None = None) -> Tensor:
    return _squeeze(ctx, x, int_list(axes))


def _unsqueeze(ctx: OpContext, x: Tensor, axes: list[int]) -> Tensor:
    rank = x.dim() + len(axes)
    dims = sorted(norm_axis(ctx, a, rank) for a in axes)
    if len(set(dims)) != len(dims):
        raise ShapeError(f"op Unsqueeze ({ctx.name!r}): axes {axes} repeat an axis")
    shape = list(x.shape)
    for d in dims:
        shape.insert(d, 1)
    return x.reshape(shape)


@register("Unsqueeze", since=1, until=12)
def unsqueeze_attr(ctx: OpContext, x: Tensor) -> Tensor:
    return _unsqueeze(ctx, x, int_list(ctx.attr("axes")))


@register("Unsqueeze", since=13)
def unsqueeze(ctx: OpContext, x: Tensor, axes: Tensor) -> Tensor:
    return _unsqueeze(ctx, x, int_list(axes))


@register("Expand", since=8)
def expand(ctx: OpContext, x: Tensor, shape: Tensor) -> Tensor:
    """Bidirectional broadcast of ``x`` with ``shape``."""
    try:
        out_shape = torch.broadcast_shapes(tuple(x.shape), tuple(int_list(shape)))
    except RuntimeError as e:
        raise ShapeError(f"op Expand ({ctx.name!r}): {tuple(x.shape)} does not broadcast with {int_list(shape)}") from e
    return x.expand(out_shape).contiguous()


@register("Tile", since=6)
def tile(ctx: OpContext, x: Tensor, repeats: Tensor) -> Tensor:
    reps = int_list(repeats)
    if len(reps) != x.dim():
        raise ShapeError(f"op Tile ({ctx.name!r}): repeats has {len(reps)} entries, expected rank {x.dim()}")
    return x.repeat(reps) if reps else x.clone()


# -------------------------------------------------------------------------- Concat, Split


@register("Concat", since=4)
def concat(ctx: OpContext, *inputs: Tensor) -> Tensor:
    check_dtypes(ctx, *inputs)
    axis = norm_axis(ctx, int(ctx.attr("axis")), inputs[0].dim())
    return torch.cat(inputs, dim=axis)


def _split(ctx: OpContext, x: Tensor, sizes: list[int]) -> tuple[Tensor, ...]:
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), x.dim())
    length = x.shape[axis]
    if not sizes:
        parts = int(ctx.attr("num_outputs", ctx.num_outputs))
        if ctx.attr("num_outputs") is not None:  # opset 18+: the last chunk may be smaller
            chunk = -(-length // parts)
            sizes = [min(chunk, max(length - i * chunk, 0)) for i in range(parts)]
        elif length % parts:
            raise ShapeError(f"op Split ({ctx.name!r}): axis {axis} of size {length} does not split into {parts} equal parts")
        else:
            sizes = [length // parts] * parts
    if sum(sizes) != length:
        raise ShapeError(f"op Split ({ctx.name!r}): split sizes {sizes} do not sum to axis {axis} of size {length}")
    return tuple(torch.split(x, sizes, dim=axis))


@register("Split", since=2, until=12)
def split_attr(ctx: OpContext, x: Tensor) -> tuple[Tensor, ...]:
    return _split(ctx, x, int_list(ctx.attr("split")))


@register("Split", since=13)
def split(ctx: OpContext, x: Tensor, sizes: Tensor | None = None) -> tuple[Tensor, ...]:
    return _split(ctx, x, int_list(sizes))


# ------------------------------------------------------------------------ shape queries


@register("Shape", since=1)
def shape(ctx: OpContext, x: Tensor) -> Tensor:
    """``start``/``end`` (opset 15+) slice the shape with Python's clamping rules."""
    start, end = int(ctx.attr("start", 0)), ctx.attr("end")
    dims = list(x.shape)[start : None if end is None else int(end)]
    return torch.tensor(dims, dtype=torch.int64, device=ctx.device)


@register("Size", since=1)
def size(ctx: OpContext, x: Tensor) -> Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64, device=ctx.device)


@register("Identity", since=1)
def identity(ctx: OpContext, x: Tensor) -> Tensor:
    return x


# ----------------------------------------------------------------------------- creation


def _from_numpy(ctx: OpContext, value: Any, what: str) -> Tensor:
    array = np.asarray(value)
    try:
        out = torch.from_numpy(np.array(array, copy=True))
    except TypeError as e:
        raise UnsupportedOpError(f"op {ctx.op_type} ({ctx.name!r}): {what} of dtype {array.dtype} is not supported") from e
    if out.dtype not in SUPPORTED_DTYPES:
        raise UnsupportedOpError(f"op {ctx.op_type} ({ctx.name!r}): {what} of dtype {out.dtype} is not supported")
    return out


_CONSTANT_ATTRS = {
    "value_float": torch.float32,
    "value_floats": torch.float32,
    "value_int": torch.int64,
    "value_ints": torch.int64,
}


@register("Constant", since=1)
def constant(ctx: OpContext) -> Tensor:
    """Exactly one of ``value``, ``value_float(s)``, ``value_int(s)``; strings and sparse unsupported."""
    present = [k for k in ctx.attrs if k.startswith("value") or k == "sparse_value"]
    if len(present) != 1:
        raise ShapeError(f"op Constant ({ctx.name!r}): expected exactly one value attribute, found {present}")
    key = present[0]
    if key == "value":
        return _from_numpy(ctx, ctx.attr("value"), "value").to(ctx.device)
    if key in _CONSTANT_ATTRS:
        return torch.tensor(ctx.attr(key), dtype=_CONSTANT_ATTRS[key], device=ctx.device)
    raise UnsupportedOpError(f"op Constant ({ctx.name!r}): attribute {key} is not supported (string/sparse tensors)")


@register("ConstantOfShape", since=9)
def constant_of_shape(ctx: OpContext, shape: Tensor) -> Tensor:
    value = ctx.attr("value")
    fill = torch.zeros(1, dtype=torch.float32) if value is None else _from_numpy(ctx, value, "value")
    return torch.full(int_list(shape), fill.reshape(-1)[0].item(), dtype=fill.dtype, device=ctx.device)


@register("Range", since=11, until=26)
def range_(ctx: OpContext, start: Tensor, limit: Tensor, delta: Tensor) -> Tensor:
    """``max(ceil((limit - start) / delta), 0)`` elements ``start + i * delta``."""
    check_dtypes(ctx, start, limit, delta)
    s, lim, d = start.item(), limit.item(), delta.item()
    if d == 0:
        raise ShapeError(f"op Range ({ctx.name!r}): delta must be non-zero, found 0")
    n = max(math.ceil((lim - s) / d), 0)
    if start.dtype.is_floating_point:
        return (torch.arange(n, dtype=torch.float64, device=ctx.device) * d + s).to(start.dtype)
    return torch.arange(n, dtype=torch.int64, device=ctx.device).mul(int(d)).add(int(s)).to(start.dtype)


#: Range-27 ``stash_type`` codes (ONNX float and double) and the dtypes they compute in.
_RANGE_STASH = {1: torch.float32, 11: torch.float64}


@register("Range", since=27)
def range_stash(ctx: OpContext, start: Tensor, limit: Tensor, delta: Tensor) -> Tensor:
    """Opset 27: float16 inputs are cast to ``stash_type`` (float32 by default, or float64),
    each ``start + i * delta`` is rounded to that type and then to float16; other dtypes are
    computed as before."""
    if start.dtype != torch.float16:
        return cast(Tensor, range_(ctx, start, limit, delta))
    code = int(ctx.attr("stash_type", 1))
    if code not in _RANGE_STASH:
        raise UnsupportedOpError(
            f"op Range ({ctx.name!r}): stash_type must be 1 (float) or 11 (double), found {code}"
        )
    stash = _RANGE_STASH[code]
    out = cast(Tensor, range_(ctx, start.to(stash), limit.to(stash), delta.to(stash)))
    return _double_to_half(out) if stash == torch.float64 else out.to(torch.float16)


def _double_to_half(t: Tensor) -> Tensor:
    """float64 -> float16 rounded once, to nearest even. torch converts through float32 and so
    rounds twice (1 + 2**-11 + 2**-24 becomes 1, not 1 + 2**-10); rounding to float32 toward
    zero and setting the last bit when inexact ("round to odd") makes the second rounding exact."""
    single = t.to(torch.float32)
    inexact = single.to(torch.float64) != t
    too_far = single.abs().to(torch.float64) > t.abs()
    truncated = torch.where(too_far, torch.nextafter(single, torch.zeros_like(single)), single)
    odd = (truncated.view(torch.int32) | 1).view(torch.float32)
    return torch.where(inexact, odd, single).to(torch.float16)

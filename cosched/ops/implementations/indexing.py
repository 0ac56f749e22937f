"""Indexing ops: Slice, Gather, GatherElements, GatherND, ScatterND, ScatterElements, Pad,
Trilu, NonZero, OneHot.

Negative indices count from the end of their axis, as ONNX allows. Slice clamps starts and
ends per ONNX (including negative steps); Pad supports constant, reflect, edge and wrap modes
and negative pads (cropping).
"""

from __future__ import annotations

import math
import warnings

import torch

from cosched.errors import ShapeError, UnsupportedOpError
from cosched.ops.implementations.common import attr_str, check_dtypes, int_list, norm_axis
from cosched.ops.registry import OpContext, register

Tensor = torch.Tensor


def _positive(index: Tensor, size: int | Tensor) -> Tensor:
    index = index.to(torch.int64)
    return torch.where(index < 0, index + size, index)


# -------------------------------------------------------------------------------- Slice


def _slice_range(start: int, end: int, step: int, size: int, device: torch.device) -> torch.Tensor:
    if start < 0:
        start += size
    if end < 0:
        end += size
    if step > 0:
        start, end = min(max(start, 0), size), min(max(end, 0), size)
    else:
        start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
    count = max(0, -(-(end - start) // step))  # ceil((end - start) / step)
    return torch.arange(count, dtype=torch.int64, device=device) * step + start


def _slice(ctx: OpContext, x: Tensor, starts: list[int], ends: list[int], axes: list[int], steps: list[int]) -> Tensor:
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ShapeError(
            f"op Slice ({ctx.name!r}): starts, ends, axes, steps must have equal lengths, found "
            f"{len(starts)}, {len(ends)}, {len(axes)}, {len(steps)}"
        )
    out = x
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step == 0:
            raise ShapeError(f"op Slice ({ctx.name!r}): step 0 on axis {axis}")
        dim = norm_axis(ctx, axis, x.dim())
        out = out.index_select(dim, _slice_range(start, end, step, x.shape[dim], x.device))
    return out


@register("Slice", since=1, until=9)
def slice_attr(ctx: OpContext, x: Tensor) -> Tensor:
    return _slice(ctx, x, int_list(ctx.attr("starts")), int_list(ctx.attr("ends")), int_list(ctx.attr("axes")), [])


@register("Slice", since=10)
def slice_(
    ctx: OpContext, x: Tensor, starts: Tensor, ends: Tensor, axes: Tensor | None = None, steps: Tensor | None = None
) -> Tensor:
    return _slice(ctx, x, int_list(starts), int_list(ends), int_list(axes), int_list(steps))


# ------------------------------------------------------------------------------- gathers


@register("Gather", since=1)
def gather(ctx: OpContext, data: Tensor, indices: Tensor) -> Tensor:
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), data.dim())
    flat = _positive(indices, data.shape[axis]).reshape(-1)
    out = data.index_select(axis, flat)
    return out.reshape((*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :]))


@register("GatherElements", since=11)
def gather_elements(ctx: OpContext, data: Tensor, indices: Tensor) -> Tensor:
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), data.dim())
    return torch.gather(data, axis, _positive(indices, data.shape[axis]))


def _nd_rows(ctx: OpContext, data: Tensor, indices: Tensor, batch_dims: int) -> tuple[Tensor, ...]:
    """Index tensors selecting, per ``indices`` row, a slice of ``data`` (batch dims first)."""
    m = indices.shape[-1]
    if batch_dims + m > data.dim():
        raise ShapeError(
            f"op {ctx.op_type} ({ctx.name!r}): index depth {m} plus batch_dims {batch_dims} exceeds data rank {data.dim()}"
        )
    rows = indices.reshape(-1, m).to(torch.int64)
    batch = math.prod(data.shape[:batch_dims])
    per_batch = rows.shape[0] // max(batch, 1)
    batch_index = torch.arange(batch, device=data.device).repeat_interleave(per_batch)
    dims = data.shape[batch_dims : batch_dims + m]
    cols = tuple(_positive(rows[:, j], dims[j]) for j in range(m))
    return (batch_index, *cols)


@register("GatherND", since=11)
def gather_nd(ctx: OpContext, data: Tensor, indices: Tensor) -> Tensor:
    b = int(ctx.attr("batch_dims", 0))
    m = indices.shape[-1]
    flat = data.reshape(math.prod(data.shape[:b]), *data.shape[b:])
    out = flat[_nd_rows(ctx, data, indices, b)]
    return out.reshape((*indices.shape[:-1], *data.shape[b + m :]))


# ------------------------------------------------------------------------------ scatters

_INDEX_REDUCE = {"mul": "prod", "max": "amax", "min": "amin"}


@register("ScatterND", since=11)
def scatter_nd(ctx: OpContext, data: Tensor, indices: Tensor, updates: Tensor) -> Tensor:
    reduction = attr_str(ctx, "reduction", "none")
    m = indices.shape[-1]
    _, *cols = _nd_rows(ctx, data, indices, 0)
    strides = [math.prod(data.shape[j + 1 : m]) for j in range(m)]
    linear = sum((c * s for c, s in zip(cols, strides, strict=True)), torch.zeros_like(cols[0]))
    out = data.reshape(math.prod(data.shape[:m]), *data.shape[m:]).clone()
    rows = updates.reshape(-1, *data.shape[m:])
    if reduction == "none":
        out[linear] = rows
    elif reduction == "add":
        out.index_add_(0, linear, rows)
    elif reduction in _INDEX_REDUCE:
        with warnings.catch_warnings():  # torch flags index_reduce_ as beta on every call
            warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)
            out.index_reduce_(0, linear, rows, _INDEX_REDUCE[reduction], include_self=True)
    else:
        raise UnsupportedOpError(f"op ScatterND ({ctx.name!r}): reduction {reduction!r} is not supported")
    return out.reshape(data.shape)


_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@register("ScatterElements", since=11)
def scatter_elements(ctx: OpContext, data: Tensor, indices: Tensor, updates: Tensor) -> Tensor:
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), data.dim())
    reduction = attr_str(ctx, "reduction", "none")
    index = _positive(indices, data.shape[axis])
    if reduction == "none":
        return data.scatter(axis, index, updates)
    if reduction not in _SCATTER_REDUCE:
        raise UnsupportedOpError(f"op ScatterElements ({ctx.name!r}): reduction {reduction!r} is not supported")
    return data.scatter_reduce(axis, index, updates, _SCATTER_REDUCE[reduction], include_self=True)


# ---------------------------------------------------------------------------------- Pad


def _pad_index(mode: str, begin: int, end: int, size: int, device: torch.device) -> Tensor:
    i = torch.arange(-begin, size + end, dtype=torch.int64, device=device)
    if mode == "edge" or (mode == "reflect" and size == 1):
        return i.clamp(0, size - 1)
    if mode == "wrap":
        return i.remainder(size)
    period = 2 * (size - 1)  # reflect without repeating the edge
    i = i.remainder(period)
    return torch.where(i >= size, period - i, i)


def _pad(ctx: OpContext, x: Tensor, pads: list[int], value: float, axes: list[int]) -> Tensor:
    check_dtypes(ctx, x)
    mode = attr_str(ctx, "mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise UnsupportedOpError(f"op Pad ({ctx.name!r}): mode {mode!r} is not supported")
    dims = [norm_axis(ctx, a, x.dim()) for a in axes] if axes else list(range(x.dim()))
    if len(pads) != 2 * len(dims):
        raise ShapeError(f"op Pad ({ctx.name!r}): pads has {len(pads)} entries, expected {2 * len(dims)}")
    out = x
    for k, dim in enumerate(dims):
        begin, end = pads[k], pads[k + len(dims)]
        size = out.shape[dim]
        out = out.narrow(dim, max(-begin, 0), size - max(-begin, 0) - max(-end, 0))  # crop
        begin, end, size = max(begin, 0), max(end, 0), out.shape[dim]
        if not begin and not end:
            continue
        if mode == "constant":
            shape = list(out.shape)
            shape[dim] = size + begin + end
            padded = torch.full(shape, value, dtype=x.dtype, device=x.device)
            padded.narrow(dim, begin, size).copy_(out)
            out = padded
        elif size == 0:
            raise ShapeError(f"op Pad ({ctx.name!r}): mode {mode!r} cannot pad axis {dim} of size 0")
        else:
            out = out.index_select(dim, _pad_index(mode, begin, end, size, x.device))
    return out


@register("Pad", since=2, until=10)
def pad_attr(ctx: OpContext, x: Tensor) -> Tensor:
    return _pad(ctx, x, int_list(ctx.attr("pads")), float(ctx.attr("value", 0.0)), [])


@register("Pad", since=11)
def pad(
    ctx: OpContext, x: Tensor, pads: Tensor, value: Tensor | None = None, axes: Tensor | None = None
) -> Tensor:
    fill = value.reshape(-1)[0].item() if value is not None and value.numel() else 0
    return _pad(ctx, x, int_list(pads), fill, int_list(axes))


# --------------------------------------------------------------------------------- misc


@register("Trilu", since=14)
def trilu(ctx: OpContext, x: Tensor, k: Tensor | None = None) -> Tensor:
    diagonal = int_list(k)[0] if k is not None else 0
    upper = int(ctx.attr("upper", 1))
    if x.dtype == torch.bool:
        return (torch.triu if upper else torch.tril)(x.to(torch.uint8), diagonal).to(torch.bool)
    return torch.triu(x, diagonal) if upper else torch.tril(x, diagonal)


@register("NonZero", since=9)
def nonzero(ctx: OpContext, x: Tensor) -> Tensor:
    check_dtypes(ctx, x)
    return torch.nonzero(x.reshape(1) if x.dim() == 0 else x).T.contiguous()


@register("OneHot", since=9)
def one_hot(ctx: OpContext, indices: Tensor, depth: Tensor, values: Tensor) -> Tensor:
    check_dtypes(ctx, indices, depth, values)
    n = int(depth.reshape(-1)[0].item())
    idx = indices.to(torch.float64).floor().to(torch.int64) if indices.dtype.is_floating_point else indices.to(torch.int64)
    idx = torch.where(idx < 0, idx + n, idx)
    hot = (idx.unsqueeze(-1) == torch.arange(n, device=idx.device)) & (idx.unsqueeze(-1) >= 0)
    axis = norm_axis(ctx, int(ctx.attr("axis", -1)), indices.dim() + 1)
    hot = hot.movedim(-1, axis)
    off, on = values.reshape(-1)[0], values.reshape(-1)[1]
    return torch.where(hot, on, off)

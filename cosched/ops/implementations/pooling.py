"""Pooling: MaxPool (with Indices), AveragePool, GlobalAveragePool, GlobalMaxPool.

Output sizes follow the ONNX rules (``ceil_mode`` with "the last window starts inside the
input or its begin padding", SAME_* auto_pad giving ``ceil(in / stride)``). The input is
padded explicitly (pads plus whatever extra end padding ``ceil_mode`` needs), so torch
pools with no padding of its own, which also lifts torch's "pad <= kernel / 2" limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cosched.errors import UnsupportedOpError
from cosched.ops.implementations._spatial import Window, auto_pad_mode, pad_spatial, window
from cosched.ops.registry import MAX_OPSET, OpContext, register

__all__: list[str] = []

_MAX: dict[int, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d
}
_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _geometry(ctx: OpContext, x: torch.Tensor) -> tuple[Window, list[int], list[tuple[int, int]]]:
    """The window, the output spatial sizes, and pads including ceil-mode end padding."""
    rank = x.dim() - 2
    if rank not in _MAX:
        raise UnsupportedOpError(
            f"op {ctx.name!r} ({ctx.op_type}): expected an input of rank 3, 4 or 5, "
            f"but got shape {tuple(x.shape)}"
        )
    kernel = ctx.attr("kernel_shape", None)
    if not kernel:
        raise UnsupportedOpError(f"op {ctx.name!r} ({ctx.op_type}): kernel_shape is required")
    spatial = list(x.shape[2:])
    win = window(ctx, spatial, kernel)
    mode = auto_pad_mode(ctx)
    ceil = bool(ctx.attr("ceil_mode", 0))
    outs: list[int] = []
    pads: list[tuple[int, int]] = []
    for i, n in enumerate(spatial):
        s, span = win.strides[i], win.span(i)
        begin, end = win.pads[i]
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            out = math.ceil(n / s)
        elif mode == "VALID":
            out = math.ceil((n - span + 1) / s)
        else:
            exact = (n + begin + end - span) / s + 1
            out = math.ceil(exact) if ceil else math.floor(exact)
            if ceil and (out - 1) * s >= n + begin:
                out -= 1
        extra = max(0, (out - 1) * s + span - (n + begin + end))
        outs.append(out)
        pads.append((begin, end + extra))
    return win, outs, pads


def _crop(y: torch.Tensor, outs: list[int]) -> torch.Tensor:
    return y[(..., *(slice(0, o) for o in outs))] if list(y.shape[2:]) != outs else y


def _onnx_indices(
    idx: torch.Tensor, x_shape: torch.Size, pads: list[tuple[int, int]], column_major: bool
) -> torch.Tensor:
    """torch's per-plane indices into the padded input -> ONNX's flat indices into the input."""
    spatial = list(x_shape[2:])
    padded = [n + b + e for n, (b, e) in zip(spatial, pads, strict=True)]
    coords = []
    rest = idx
    for size in reversed(padded):
        coords.append(rest % size)
        rest = rest // size
    coords = [c - b for c, (b, _) in zip(reversed(coords), pads, strict=True)]
    flat = torch.zeros_like(idx)
    order = range(len(spatial) - 1, -1, -1) if column_major else range(len(spatial))
    for axis in order:
        flat = flat * spatial[axis] + coords[axis]
    planes = torch.arange(x_shape[0] * x_shape[1], dtype=idx.dtype, device=idx.device).reshape(
        (x_shape[0], x_shape[1]) + (1,) * len(spatial)
    )
    return flat + planes * math.prod(spatial)


@register("MaxPool", 11, MAX_OPSET)
def max_pool(ctx: OpContext, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    win, outs, pads = _geometry(ctx, x)
    work = x if x.is_floating_point() else x.to(torch.float64)
    padded = pad_spatial(work, pads, value=float("-inf"))
    y, idx = _MAX[len(outs)](
        padded, win.kernel, win.strides, 0, win.dilations, return_indices=True
    )
    y = _crop(y, outs).to(x.dtype)
    if ctx.num_outputs < 2:
        return y
    column_major = bool(ctx.attr("storage_order", 0))
    return y, _onnx_indices(_crop(idx, outs), x.shape, pads, column_major)


def _window_sum(x: torch.Tensor, win: Window) -> torch.Tensor:
    """Sum over each (dilated) window of every (n, c) plane, with no padding."""
    n, c = x.shape[:2]
    planes = x.reshape((n * c, 1, *tuple(x.shape[2:])))
    ones = torch.ones((1, 1, *win.kernel), dtype=x.dtype, device=x.device)
    y = _CONV[len(win.kernel)](planes, ones, stride=win.strides, dilation=win.dilations)
    return y.reshape((n, c, *tuple(y.shape[2:])))


@register("AveragePool", 11, MAX_OPSET)
def average_pool(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    """Window sums divided by the number of counted cells (explicit pads count if asked)."""
    win, outs, pads = _geometry(ctx, x)
    work = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    total = _window_sum(pad_spatial(work, pads), win)
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=work.dtype, device=x.device)
    if ctx.attr("count_include_pad", 0):
        explicit = [(b, e) for b, e in win.pads]
        ones = pad_spatial(ones, explicit, value=1.0)
        extra = [(0, e - pe) for (_, e), (_, pe) in zip(pads, explicit, strict=True)]
        mask = pad_spatial(ones, extra)
    else:
        mask = pad_spatial(ones, pads)
    count = _window_sum(mask, win)
    return _crop(total / count, outs).to(x.dtype)


@register("LpPool", 18, MAX_OPSET)
def lp_pool(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    """``(sum over the window of |x|^p)^(1/p)``; padded cells contribute zero."""
    win, outs, pads = _geometry(ctx, x)
    p = float(ctx.attr("p", 2))
    total = _window_sum(pad_spatial(x.abs() ** p, pads), win)
    return _crop(total ** (1.0 / p), outs).to(x.dtype)


@register("GlobalAveragePool", 1, MAX_OPSET)
def global_average_pool(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool", 1, MAX_OPSET)
def global_max_pool(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)

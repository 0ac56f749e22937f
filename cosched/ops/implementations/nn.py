"""Dense neural-network ops: Conv, ConvTranspose, Gemm, MatMul, Einsum.

Convolutions handle 1D, 2D and 3D inputs. Padding is applied explicitly (ONNX allows
asymmetric pads that torch's ``padding=`` argument cannot express), then torch runs the
convolution unpadded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cosched.errors import UnsupportedOpError
from cosched.ops.implementations._spatial import auto_pad_mode, pad_spatial, same_pads, window
from cosched.ops.registry import MAX_OPSET, OpContext, register

__all__: list[str] = []

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}


def _spatial_rank(ctx: OpContext, x: torch.Tensor, table: dict[int, object]) -> int:
    rank = x.dim() - 2
    if rank not in table:
        raise UnsupportedOpError(
            f"op {ctx.name!r} ({ctx.op_type}): expected an input of rank 3, 4 or 5 "
            f"(1D, 2D or 3D), but got shape {tuple(x.shape)}"
        )
    return rank


@register("Conv", 1, MAX_OPSET)
def conv(ctx: OpContext, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    rank = _spatial_rank(ctx, x, _CONV)
    kernel = ctx.attr("kernel_shape", None) or w.shape[2:]
    win = window(ctx, x.shape[2:], kernel)
    x = pad_spatial(x, win.pads)
    return _CONV[rank](
        x, w, b, stride=win.strides, dilation=win.dilations, groups=int(ctx.attr("group", 1))
    )


@register("ConvTranspose", 1, MAX_OPSET)
def conv_transpose(
    ctx: OpContext, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    """Full (unpadded) transposed convolution, then crop ``pads`` / fit ``output_shape``."""
    rank = _spatial_rank(ctx, x, _CONV_T)
    group = int(ctx.attr("group", 1))
    strides = [int(s) for s in ctx.attr("strides", None) or [1] * rank]
    dilations = [int(d) for d in ctx.attr("dilations", None) or [1] * rank]
    out_pad = [int(p) for p in ctx.attr("output_padding", None) or [0] * rank]
    kernel = [int(k) for k in ctx.attr("kernel_shape", None) or w.shape[2:]]
    full = _CONV_T[rank](x, w, None, stride=strides, groups=group, dilation=dilations)
    spatial = x.shape[2:]
    out_shape = ctx.attr("output_shape", None)
    mode = auto_pad_mode(ctx)
    begins: list[int] = []
    sizes: list[int] = []
    for i in range(rank):
        natural = strides[i] * (spatial[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            size = int(out_shape[i]) if out_shape else spatial[i] * strides[i]
            begin = same_pads(natural - size, mode)[0]
        else:
            pads = [int(p) for p in ctx.attr("pads", None) or [0] * (2 * rank)]
            if out_shape:
                # The spec's "else" branch (as onnxruntime): the larger half of the padding
                # goes first; an output larger than the natural one is zero-filled at the end.
                size = int(out_shape[i])
                total = natural - size
                begin = total - total // 2 if total > 0 else 0
            else:
                begin, size = pads[i], natural - pads[i] - pads[i + rank]
        begins.append(begin)
        sizes.append(size)
    # Pad or crop each axis so that it spans exactly [begin, begin + size) of the full result.
    y = pad_spatial(
        full,
        [(-begins[i], begins[i] + sizes[i] - full.shape[2 + i]) for i in range(rank)],
    )
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * rank)
    return y


@register("Gemm", 11, MAX_OPSET)
def gemm(ctx: OpContext, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    if ctx.attr("transA", 0):
        a = a.T
    if ctx.attr("transB", 0):
        b = b.T
    y = a @ b
    alpha = float(ctx.attr("alpha", 1.0))
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        beta = float(ctx.attr("beta", 1.0))
        y = y + (c * beta if beta != 1.0 else c)
    return y.to(a.dtype)


@register("MatMul", 1, MAX_OPSET)
def matmul(ctx: OpContext, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a, b)


@register("Einsum", 12, MAX_OPSET)
def einsum(ctx: OpContext, *operands: torch.Tensor) -> torch.Tensor:
    equation = str(ctx.attr("equation", "")).replace(" ", "")
    if not equation:
        raise UnsupportedOpError(f"op {ctx.name!r} (Einsum): expected an equation attribute, found none")
    return torch.einsum(equation, *operands)

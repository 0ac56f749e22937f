"""Shared geometry of windowed ops (Conv, ConvTranspose, pooling): pads, strides, auto_pad.

ONNX writes pads as ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``; these helpers turn the
attributes of a node into per-axis ``(begin, end)`` pairs and output sizes, following the
ONNX specification (and its reference implementation) for every ``auto_pad`` mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cosched.errors import UnsupportedOpError
from cosched.ops.registry import OpContext

__all__ = ["Window", "auto_pad_mode", "pad_spatial", "same_pads", "window"]


@dataclass(frozen=True)
class Window:
    """Per spatial axis: kernel, strides, dilations, and explicit (begin, end) pads."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]

    def span(self, axis: int) -> int:
        """The extent of the dilated kernel along ``axis``."""
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1


def auto_pad_mode(ctx: OpContext) -> str:
    mode = ctx.attr("auto_pad", "NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise UnsupportedOpError(
            f"op {ctx.name!r} ({ctx.op_type}): auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER "
            f"or VALID, but got {mode!r}"
        )
    return mode


def same_pads(total: int, mode: str) -> tuple[int, int]:
    """Split ``total`` padding per SAME_UPPER (extra at the end) or SAME_LOWER (at the start)."""
    small, large = total // 2, total - total // 2
    return (small, large) if mode == "SAME_UPPER" else (large, small)


def window(ctx: OpContext, spatial: Sequence[int], kernel: Sequence[int]) -> Window:
    """Resolve a windowed node's attributes against the input's spatial shape.

    For SAME_* the pads are chosen so that ``out = ceil(in / stride)``, as ONNX specifies.
    """
    rank = len(spatial)
    strides = tuple(int(s) for s in ctx.attr("strides", None) or [1] * rank)
    dilations = tuple(int(d) for d in ctx.attr("dilations", None) or [1] * rank)
    kernel = tuple(int(k) for k in kernel)
    mode = auto_pad_mode(ctx)
    if mode == "NOTSET":
        raw = [int(p) for p in ctx.attr("pads", None) or [0] * (2 * rank)]
        pads = tuple((raw[i], raw[i + rank]) for i in range(rank))
    elif mode == "VALID":
        pads = ((0, 0),) * rank
    else:
        pads = tuple(
            same_pads(
                max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0), mode
            )
            for n, s, k, d in zip(spatial, strides, kernel, dilations, strict=True)
        )
    return Window(kernel, strides, dilations, pads)


def pad_spatial(x: torch.Tensor, pads: Sequence[tuple[int, int]], value: float = 0.0) -> torch.Tensor:
    """Pad (or, for negative pads, crop) the trailing spatial axes of ``x``."""
    if not any(b or e for b, e in pads):
        return x
    flat: list[int] = []
    for begin, end in reversed(pads):
        flat += [begin, end]
    return F.pad(x, flat, value=value)

"""Normalisations: BatchNormalization (inference), LayerNormalization, InstanceNormalization,
GroupNormalization, LpNormalization."""

from __future__ import annotations

import torch

from cosched.errors import UnsupportedOpError
from cosched.ops.registry import MAX_OPSET, OpContext, register

__all__: list[str] = []


def _channel(v: torch.Tensor, rank: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over (N, C, *spatial)."""
    return v.reshape((1, -1) + (1,) * (rank - 2))


@register("BatchNormalization", 9, MAX_OPSET)
def batch_norm(
    ctx: OpContext, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
    mean: torch.Tensor, var: torch.Tensor,
) -> torch.Tensor:
    """Inference mode: normalise with the stored running statistics."""
    if ctx.attr("training_mode", 0) or ctx.num_outputs > 1:
        raise UnsupportedOpError(
            f"op {ctx.name!r} (BatchNormalization): training mode (training_mode=1 or running "
            "statistics outputs) is not supported; cosched runs inference only"
        )
    eps = float(ctx.attr("epsilon", 1e-5))
    r = x.dim()
    inv = torch.rsqrt(_channel(var, r).to(x.dtype) + eps)
    return (x - _channel(mean, r).to(x.dtype)) * inv * _channel(scale, r).to(x.dtype) + _channel(
        bias, r
    ).to(x.dtype)


def _stashed(ctx: OpContext, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], float]:
    """For LayerNormalization and RMSNormalization: ``x`` in the stash type (stash_type=1,
    the default: float32, or float64 for float64 input; otherwise x's own dtype), the
    normalised axes ``axis..rank-1``, and epsilon."""
    axis = int(ctx.attr("axis", -1)) % x.dim()
    eps = float(ctx.attr("epsilon", 1e-5))
    stash = torch.float64 if x.dtype == torch.float64 else torch.float32
    if int(ctx.attr("stash_type", 1)) != 1:
        stash = x.dtype
    return x.to(stash), tuple(range(axis, x.dim())), eps


@register("LayerNormalization", 17, MAX_OPSET)
def layer_norm(
    ctx: OpContext, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Normalise over axes ``axis..rank-1``; optional Mean and InvStdDev outputs."""
    work, dims, eps = _stashed(ctx, x)
    mean = work.mean(dim=dims, keepdim=True)
    var = ((work - mean) ** 2).mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + eps)
    y = ((work - mean) * inv_std).to(x.dtype) * scale
    if bias is not None:
        y = y + bias
    outs = (y, mean, inv_std)
    return y if ctx.num_outputs < 2 else outs[: ctx.num_outputs]


@register("InstanceNormalization", 6, MAX_OPSET)
def instance_norm(
    ctx: OpContext, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    eps = float(ctx.attr("epsilon", 1e-5))
    dims = tuple(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    r = x.dim()
    return (x - mean) * torch.rsqrt(var + eps) * _channel(scale, r) + _channel(bias, r)


@register("GroupNormalization", 21, MAX_OPSET)
def group_norm(
    ctx: OpContext, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Opset 21 semantics: scale and bias are per channel."""
    groups = int(ctx.attr("num_groups"))
    eps = float(ctx.attr("epsilon", 1e-5))
    n, _c = x.shape[:2]
    work = x.to(torch.float32) if x.dtype == torch.float16 else x
    g = work.reshape(n, groups, -1)
    mean = g.mean(dim=2, keepdim=True)
    var = ((g - mean) ** 2).mean(dim=2, keepdim=True)
    y = ((g - mean) * torch.rsqrt(var + eps)).reshape(x.shape).to(x.dtype)
    r = x.dim()
    return y * _channel(scale, r) + _channel(bias, r)


@register("LpNormalization", 1, MAX_OPSET)
def lp_norm(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    p = int(ctx.attr("p", 2))
    if p not in (1, 2):
        raise UnsupportedOpError(f"op {ctx.name!r} (LpNormalization): p must be 1 or 2, got {p}")
    norm = x.abs().sum(dim=int(ctx.attr("axis", -1)), keepdim=True) if p == 1 else torch.sqrt(
        (x * x).sum(dim=int(ctx.attr("axis", -1)), keepdim=True)
    )
    return torch.where(norm == 0, torch.zeros_like(x), x / norm)


@register("RMSNormalization", 23, MAX_OPSET)
def rms_norm(
    ctx: OpContext, x: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """``x / sqrt(mean(x^2 over axis..rank-1) + epsilon) * scale``, computed in stash_type."""
    work, dims, eps = _stashed(ctx, x)
    inv = torch.rsqrt((work * work).mean(dim=dims, keepdim=True) + eps)
    return (work * inv).to(x.dtype) * scale

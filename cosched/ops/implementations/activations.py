"""Activations and their kin: Relu, LeakyRelu, PRelu, Sigmoid, Tanh, HardSigmoid, HardSwish,
Gelu, Erf, Clip, Softmax, LogSoftmax, Dropout (inference), and a few more exporters emit."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cosched.errors import UnsupportedOpError
from cosched.ops.registry import MAX_OPSET, OpContext, register

__all__: list[str] = []


@register("Relu", 6, MAX_OPSET)
def relu(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


@register("LeakyRelu", 6, MAX_OPSET)
def leaky_relu(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, float(ctx.attr("alpha", 0.01)))


@register("PRelu", 9, MAX_OPSET)
def prelu(ctx: OpContext, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, x * slope, x)


@register("Sigmoid", 6, MAX_OPSET)
def sigmoid(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@register("Tanh", 6, MAX_OPSET)
def tanh(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


@register("HardSigmoid", 6, MAX_OPSET)
def hard_sigmoid(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    alpha = float(ctx.attr("alpha", 0.2))
    beta = float(ctx.attr("beta", 0.5))
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


@register("HardSwish", 14, MAX_OPSET)
def hard_swish(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@register("Gelu", 20, MAX_OPSET)
def gelu(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    approximate = str(ctx.attr("approximate", "none"))
    if approximate not in ("none", "tanh"):
        raise UnsupportedOpError(
            f"op {ctx.name!r} (Gelu): approximate must be 'none' or 'tanh', got {approximate!r}"
        )
    return F.gelu(x, approximate=approximate)


@register("Erf", 9, MAX_OPSET)
def erf(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    if x.is_floating_point():
        return torch.erf(x)
    return torch.erf(x.to(torch.float64)).round().to(x.dtype)


@register("Softplus", 1, MAX_OPSET)
def softplus(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x)


@register("Softsign", 1, MAX_OPSET)
def softsign(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return x / (1 + x.abs())


@register("Elu", 6, MAX_OPSET)
def elu(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, float(ctx.attr("alpha", 1.0)))


@register("Selu", 6, MAX_OPSET)
def selu(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@register("Celu", 12, MAX_OPSET)
def celu(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return F.celu(x, float(ctx.attr("alpha", 1.0)))


@register("ThresholdedRelu", 10, MAX_OPSET)
def thresholded_relu(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > float(ctx.attr("alpha", 1.0)), x, torch.zeros_like(x))


@register("Mish", 18, MAX_OPSET)
def mish(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return x * torch.tanh(F.softplus(x))


@register("Clip", 6, 10)
def clip_attrs(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    lo = float(ctx.attr("min", -math.inf))
    hi = float(ctx.attr("max", math.inf))
    return torch.clamp(x, lo, hi)


@register("Clip", 11, MAX_OPSET)
def clip(
    ctx: OpContext, x: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None
) -> torch.Tensor:
    """min/max are optional scalar inputs; with min > max every value becomes max."""
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return x


def _flattened(
    ctx: OpContext, x: torch.Tensor, fn: type[torch.autograd.Function] | object
) -> torch.Tensor:
    """Opset < 13: coerce to 2D at ``axis`` (default 1) and normalise each row."""
    axis = int(ctx.attr("axis", 1)) % max(x.dim(), 1)
    rows = math.prod(x.shape[:axis])
    y = fn(x.reshape(rows, -1), dim=1)  # type: ignore[operator]
    return y.reshape(x.shape)


@register("Softmax", 1, 12)
def softmax_legacy(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return _flattened(ctx, x, torch.softmax)


def _half_softmax(x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    """float16 Softmax/LogSoftmax as their ONNX function bodies define them: each primitive
    (Sub, Exp, ReduceSum, Div / Log, Sub) yields a float16 tensor, so round after each one.
    torch's fused half kernel rounds once, which can differ from the definition by an ulp."""
    shifted = (x.float() - x.float().amax(dim=dim, keepdim=True)).half().float()
    if log:
        total = shifted.exp().sum(dim=dim, keepdim=True).half().float()
        return (shifted - total.log().half().float()).half()
    e = shifted.exp().half().float()
    return (e / e.sum(dim=dim, keepdim=True).half().float()).half()


def _softmax(ctx: OpContext, x: torch.Tensor, log: bool) -> torch.Tensor:
    """Opset >= 13 Softmax (``log`` False) or LogSoftmax along ``axis`` (default -1)."""
    dim = int(ctx.attr("axis", -1))
    if x.dtype == torch.float16:
        return _half_softmax(x, dim, log=log)
    return torch.log_softmax(x, dim=dim) if log else torch.softmax(x, dim=dim)


@register("Softmax", 13, MAX_OPSET)
def softmax(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return _softmax(ctx, x, log=False)


@register("LogSoftmax", 1, 12)
def log_softmax_legacy(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return _flattened(ctx, x, torch.log_softmax)


@register("LogSoftmax", 13, MAX_OPSET)
def log_softmax(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    return _softmax(ctx, x, log=True)


@register("Hardmax", 13, MAX_OPSET)
def hardmax(ctx: OpContext, x: torch.Tensor) -> torch.Tensor:
    """1 at the first maximum along ``axis``, 0 elsewhere."""
    dim = int(ctx.attr("axis", -1))
    first = torch.argmax(x, dim=dim, keepdim=True)
    return torch.zeros_like(x).scatter_(dim, first, 1)


@register("Dropout", 10, 11)
def dropout_legacy(ctx: OpContext, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if ctx.num_outputs < 2:
        return x
    return x, torch.ones_like(x, dtype=torch.bool)


@register("Dropout", 12, MAX_OPSET)
def dropout(
    ctx: OpContext, x: torch.Tensor, ratio: torch.Tensor | None = None,
    training_mode: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Inference only: the identity, with an all-True mask when the mask is asked for."""
    if training_mode is not None and bool(training_mode) and (ratio is None or float(ratio) > 0):
        raise UnsupportedOpError(
            f"op {ctx.name!r} (Dropout): training_mode=True is not supported (cosched runs "
            "inference only); export the model in eval mode"
        )
    return dropout_legacy(ctx, x)

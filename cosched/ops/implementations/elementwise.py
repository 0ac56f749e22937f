"""Elementwise ops: arithmetic, math, comparison, logic, Where, variadic Min/Max/Sum/Mean, Cast.

Binary ops broadcast numpy-style (ONNX multidirectional broadcasting). Integer Div truncates
toward zero as in C; Mod follows the divisor's sign (numpy ``mod``; for floats as opset 28
defines it, also at earlier opsets, which leave it undefined) unless ``fmod=1`` (C ``fmod``).
Dtypes: see :mod:`cosched.ops.implementations.common` (bfloat16, float8, 4-bit, complex and
string tensors raise UnsupportedOpError).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cosched.errors import UnsupportedOpError
from cosched.ops.implementations.common import (
    check_dtypes,
    from_ordered,
    narrow,
    onnx_dtype,
    ordered,
    widen,
)
from cosched.ops.registry import OpContext, register

Tensor = torch.Tensor


# ---------------------------------------------------------------------------- arithmetic


def _arith(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., Tensor]:
    def impl(ctx: OpContext, a: Tensor, b: Tensor) -> Tensor:
        check_dtypes(ctx, a, b)
        return narrow(fn(widen(a), widen(b)), a.dtype)

    return impl


register("Add", since=7)(_arith(torch.add))
register("Sub", since=7)(_arith(torch.sub))
register("Mul", since=7)(_arith(torch.mul))


def _check_uint64_positive(ctx: OpContext, *ts: Tensor) -> None:
    for t in ts:
        if t.dtype == torch.uint64 and bool((t.view(torch.int64) < 0).any()):
            raise UnsupportedOpError(
                f"op {ctx.op_type} ({ctx.name!r}): uint64 operands >= 2**63 are not supported"
            )


@register("Div", since=7)
def div(ctx: OpContext, a: Tensor, b: Tensor) -> Tensor:
    check_dtypes(ctx, a, b)
    if a.dtype.is_floating_point:
        return torch.div(a, b)
    _check_uint64_positive(ctx, a, b)
    return narrow(torch.div(widen(a), widen(b), rounding_mode="trunc"), a.dtype)


@register("Mod", since=10)
def mod(ctx: OpContext, a: Tensor, b: Tensor) -> Tensor:
    """fmod=0: ``A - floor(A / B) * B``, the sign of B; fmod=1: ``A - trunc(A / B) * B`` (C fmod).

    Float inputs with fmod=0 follow opset 28's definition at every opset (earlier ones leave
    them undefined): NaN for an infinite A or a zero B, A or B for an infinite B, and a zero
    result takes B's sign (torch's ``remainder`` keeps A's).
    """
    check_dtypes(ctx, a, b)
    fmod = int(ctx.attr("fmod", 0))
    _check_uint64_positive(ctx, a, b)
    fn = torch.fmod if fmod else torch.remainder
    out = narrow(fn(widen(a), widen(b)), a.dtype)
    if not fmod and out.dtype.is_floating_point:
        out = torch.where(out == 0, torch.copysign(torch.zeros_like(out), b), out)
    return out


@register("Pow", since=7)
def pow_(ctx: OpContext, x: Tensor, y: Tensor) -> Tensor:
    """Output has X's dtype; a float exponent on an integer base is computed in float."""
    check_dtypes(ctx, x, y)
    base, exp = widen(x), widen(y)
    if not base.dtype.is_floating_point and exp.dtype.is_floating_point:
        base = base.to(torch.float64)
    elif base.dtype.is_floating_point and not exp.dtype.is_floating_point:
        exp = exp.to(torch.float64)
    return narrow(torch.pow(base, exp), x.dtype)


# ------------------------------------------------------------------------------- unary


def _unary(op_type: str, since: int, fn: Callable[[Tensor], Tensor], floats_only: bool = False) -> None:
    def impl(ctx: OpContext, x: Tensor) -> Tensor:
        check_dtypes(ctx, x)
        if floats_only and not x.dtype.is_floating_point:
            raise UnsupportedOpError(f"op {op_type} ({ctx.name!r}): dtype {x.dtype} is not a float type")
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            return fn(x)
        return narrow(fn(widen(x)), x.dtype)

    impl.__qualname__ = impl.__name__ = op_type.lower()
    register(op_type, since=since)(impl)


_unary("Abs", 6, torch.abs)
_unary("Neg", 6, torch.neg)
_unary("Sign", 9, torch.sign)
_unary("Sqrt", 6, torch.sqrt, floats_only=True)
_unary("Exp", 6, torch.exp, floats_only=True)
_unary("Log", 6, torch.log, floats_only=True)
_unary("Reciprocal", 6, torch.reciprocal, floats_only=True)
_unary("Floor", 6, torch.floor, floats_only=True)
_unary("Ceil", 6, torch.ceil, floats_only=True)
_unary("Round", 11, torch.round, floats_only=True)  # half to even, as ONNX
for _name, _fn in [
    ("Sin", torch.sin), ("Cos", torch.cos), ("Tan", torch.tan), ("Asin", torch.asin),
    ("Acos", torch.acos), ("Atan", torch.atan), ("Sinh", torch.sinh), ("Cosh", torch.cosh),
    ("Asinh", torch.asinh), ("Acosh", torch.acosh), ("Atanh", torch.atanh),
]:  # fmt: skip
    _unary(_name, 7 if _name in ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan") else 9, _fn, floats_only=True)


@register("IsNaN", since=9)
def isnan(ctx: OpContext, x: Tensor) -> Tensor:
    check_dtypes(ctx, x)
    return torch.isnan(x)


@register("IsInf", since=10)
def isinf(ctx: OpContext, x: Tensor) -> Tensor:
    check_dtypes(ctx, x)
    pos = int(ctx.attr("detect_positive", 1))
    neg = int(ctx.attr("detect_negative", 1))
    return (torch.isposinf(x) & bool(pos)) | (torch.isneginf(x) & bool(neg))


# ----------------------------------------------------------------------- comparison, logic


def _compare(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., Tensor]:
    def impl(ctx: OpContext, a: Tensor, b: Tensor) -> Tensor:
        check_dtypes(ctx, a, b)
        return fn(ordered(a), ordered(b))

    return impl


register("Equal", since=7)(_compare(torch.eq))
register("Less", since=7)(_compare(torch.lt))
register("Greater", since=7)(_compare(torch.gt))
register("LessOrEqual", since=12)(_compare(torch.le))
register("GreaterOrEqual", since=12)(_compare(torch.ge))


def _logic(op_type: str, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    def impl(ctx: OpContext, a: Tensor, b: Tensor) -> Tensor:
        if a.dtype != torch.bool or b.dtype != torch.bool:
            raise UnsupportedOpError(f"op {op_type} ({ctx.name!r}): inputs must be bool, found {a.dtype}, {b.dtype}")
        return fn(a, b)

    impl.__qualname__ = impl.__name__ = op_type.lower()
    register(op_type, since=7)(impl)


_logic("And", torch.logical_and)
_logic("Or", torch.logical_or)
_logic("Xor", torch.logical_xor)


@register("Not", since=1)
def not_(ctx: OpContext, x: Tensor) -> Tensor:
    if x.dtype != torch.bool:
        raise UnsupportedOpError(f"op Not ({ctx.name!r}): input must be bool, found {x.dtype}")
    return torch.logical_not(x)


@register("Where", since=9)
def where(ctx: OpContext, cond: Tensor, x: Tensor, y: Tensor) -> Tensor:
    check_dtypes(ctx, x, y)
    return narrow(torch.where(cond.to(torch.bool), widen(x), widen(y)), x.dtype)


# ----------------------------------------------------------------------------- variadic


def _variadic(ctx: OpContext, inputs: tuple[Tensor, ...]) -> None:
    if not inputs:
        raise UnsupportedOpError(f"op {ctx.op_type} ({ctx.name!r}): needs at least one input, found none")
    check_dtypes(ctx, *inputs)


def _extreme(ctx: OpContext, inputs: tuple[Tensor, ...], pick: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Max or Min (``pick``: torch.maximum or torch.minimum) of all inputs, broadcast."""
    _variadic(ctx, inputs)
    out = ordered(inputs[0])
    for t in inputs[1:]:
        out = pick(out, ordered(t))
    return from_ordered(out.expand(torch.broadcast_shapes(*(t.shape for t in inputs))), inputs[0].dtype)


@register("Max", since=8)
def max_(ctx: OpContext, *inputs: Tensor) -> Tensor:
    return _extreme(ctx, inputs, torch.maximum)


@register("Min", since=8)
def min_(ctx: OpContext, *inputs: Tensor) -> Tensor:
    return _extreme(ctx, inputs, torch.minimum)


@register("Sum", since=8)
def sum_(ctx: OpContext, *inputs: Tensor) -> Tensor:
    _variadic(ctx, inputs)
    out = widen(inputs[0])
    for t in inputs[1:]:
        out = out + widen(t)
    return narrow(out, inputs[0].dtype)


@register("Mean", since=8)
def mean(ctx: OpContext, *inputs: Tensor) -> Tensor:
    _variadic(ctx, inputs)
    return sum_(ctx, *inputs) / len(inputs)


# --------------------------------------------------------------------------------- casts


def _cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    """ONNX Cast: float -> int truncates toward zero; anything -> bool is ``x != 0``."""
    if dtype == torch.bool:
        return x != 0
    if x.dtype == dtype:
        return x
    if dtype in (torch.uint16, torch.uint32, torch.uint64) and x.dtype.is_floating_point:
        return narrow(x.to(torch.int64), dtype)
    return x.to(dtype)


@register("Cast", since=6)
def cast(ctx: OpContext, x: Tensor) -> Tensor:
    check_dtypes(ctx, x)
    return _cast(x, onnx_dtype(ctx, int(ctx.attr("to"))))


@register("CastLike", since=15)
def cast_like(ctx: OpContext, x: Tensor, like: Tensor) -> Tensor:
    check_dtypes(ctx, x, like)
    return _cast(x, like.dtype)

"""Helpers shared by the op implementations: dtypes, attributes, axes, unsigned integers.

Dtypes: implementations accept bool, uint8/16/32/64, int8/16/32/64 and float16/32/64. Tensors of
any other dtype (bfloat16, complex, float8, 6-, 4- and 2-bit types; strings never arrive as
tensors) and ONNX dtype codes naming them raise :class:`UnsupportedOpError`. torch lacks most
kernels for uint16/32/64, so those are computed in int64 (:func:`widen`, :func:`ordered`) and
converted back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cosched.errors import ShapeError, UnsupportedOpError
from cosched.ops.registry import OpContext

__all__ = [
    "ONNX_DTYPES",
    "SUPPORTED_DTYPES",
    "attr_str",
    "check_dtypes",
    "from_ordered",
    "int_list",
    "narrow",
    "norm_axis",
    "onnx_dtype",
    "ordered",
    "widen",
]

#: ONNX TensorProto.DataType codes cosched implements, and their torch dtypes.
ONNX_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    4: torch.uint16,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    12: torch.uint32,
    13: torch.uint64,
}

_UNSUPPORTED_CODES = {
    8: "string",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
    24: "float8e8m0",
    25: "uint2",
    26: "int2",
    27: "float6e2m3",
    28: "float6e3m2",
}

SUPPORTED_DTYPES: frozenset[torch.dtype] = frozenset(ONNX_DTYPES.values())

_WIDENED = (torch.uint16, torch.uint32)
_INT64_MIN = -(2**63)


def _where(ctx: OpContext) -> str:
    return f"op {ctx.op_type}" + (f" ({ctx.name!r})" if ctx.name else "")


def onnx_dtype(ctx: OpContext, code: int, what: str = "to") -> torch.dtype:
    """The torch dtype of ONNX dtype ``code``; UnsupportedOpError for dtypes cosched lacks."""
    if code in ONNX_DTYPES:
        return ONNX_DTYPES[code]
    name = _UNSUPPORTED_CODES.get(code, f"unknown dtype code {code}")
    raise UnsupportedOpError(
        f"{_where(ctx)}: {what}={name} is not supported; cosched implements "
        "bool, (u)int8/16/32/64 and float16/32/64"
    )


def check_dtypes(ctx: OpContext, *tensors: torch.Tensor | None) -> None:
    """Raise UnsupportedOpError if any input has a dtype outside :data:`SUPPORTED_DTYPES`."""
    for i, t in enumerate(tensors):
        if t is not None and t.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedOpError(
                f"{_where(ctx)}: input {i} has dtype {t.dtype}, which is not supported; "
                "cosched implements bool, (u)int8/16/32/64 and float16/32/64"
            )


def attr_str(ctx: OpContext, key: str, default: str) -> str:
    """A string attribute, decoded if the importer kept it as bytes."""
    value = ctx.attr(key, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def norm_axis(ctx: OpContext, axis: int, rank: int) -> int:
    """``axis`` in ``[-rank, rank)`` made non-negative; ShapeError naming the op otherwise."""
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{_where(ctx)}: axis {axis} is out of range for a tensor of rank {rank}")
    return axis % rank if rank else 0


def int_list(t: torch.Tensor | Sequence[int] | None) -> list[int]:
    """A 0-d/1-d integer tensor (or a sequence) as a list of Python ints."""
    if t is None:
        return []
    if isinstance(t, torch.Tensor):
        return [int(v) for v in t.reshape(-1).tolist()]
    return [int(v) for v in t]


def widen(t: torch.Tensor) -> torch.Tensor:
    """uint16/32 as int64 (exact); uint64 reinterpreted as int64 (exact modulo 2**64)."""
    if t.dtype in _WIDENED:
        return t.to(torch.int64)
    if t.dtype == torch.uint64:
        return t.view(torch.int64)
    return t


def narrow(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Undo :func:`widen`: back to ``dtype`` (wrapping modulo 2**bits like C)."""
    if dtype == torch.uint64 and t.dtype == torch.int64:
        return t.view(torch.uint64)
    return t if t.dtype == dtype else t.to(dtype)


def ordered(t: torch.Tensor) -> torch.Tensor:
    """An int64 tensor ordered like ``t`` for unsigned dtypes torch cannot compare."""
    if t.dtype == torch.uint64:
        return torch.bitwise_xor(t.view(torch.int64), _INT64_MIN)
    return widen(t)


def from_ordered(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Undo :func:`ordered`."""
    if dtype == torch.uint64:
        return torch.bitwise_xor(t, _INT64_MIN).view(torch.uint64)
    return narrow(t, dtype)

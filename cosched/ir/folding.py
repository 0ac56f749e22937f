"""numpy evaluators for the ONNX ops that shape-computation chains are made of.

The TorchScript (legacy) exporter spells every dynamic size as a chain such as
``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``; once the graph inputs have static
shapes, those chains are constant and the importer evaluates them here, so that the chain's
ops disappear and the ops they feed get static shapes. Only values are computed, never
tensors that carry data a model learns or receives (the importer decides what to fold).

:func:`evaluate` takes Python attribute values (as :class:`cosched.ir.Op` holds them) and
numpy inputs (``None`` for an omitted optional input). For ``Shape`` and ``Size`` only the
input's shape matters, so callers may pass a zero-stride view from :func:`shape_only`.
It raises :class:`NotFoldable` when an op or a case is not handled; the op then stays in the
graph, which is always correct.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from onnx.helper import tensor_dtype_to_np_dtype

__all__ = ["FOLDABLE", "NotFoldable", "evaluate", "shape_only"]

Array = np.ndarray
Inputs = Sequence["Array | None"]


class NotFoldable(Exception):
    """The op (or this case of it) cannot be evaluated here; leave it in the graph."""


def shape_only(shape: Sequence[int], dtype: str | np.dtype) -> Array:
    """A read-only array of ``shape`` that owns no memory, for ``Shape`` and ``Size``."""
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))


def _attr_axes(attrs: Mapping[str, Any], inputs: Inputs, position: int) -> tuple[int, ...] | None:
    """``axes`` from the input at ``position`` (newer opsets) or from the attribute."""
    if len(inputs) > position and inputs[position] is not None:
        return tuple(int(a) for a in np.asarray(inputs[position]).reshape(-1))
    if "axes" in attrs:
        return tuple(int(a) for a in attrs["axes"])
    return None


def _req(inputs: Inputs, i: int) -> Array:
    if len(inputs) <= i or inputs[i] is None:
        raise NotFoldable(f"input {i} is missing")
    return np.asarray(inputs[i])


# --------------------------------------------------------------- element-wise
def _int_div(a: Array, b: Array) -> Array:
    if np.any(b == 0):
        raise NotFoldable("integer division by zero")
    q = np.abs(a) // np.abs(b)
    return q * np.sign(a) * np.sign(b)  # ONNX integer Div truncates toward zero


def _div(a: Array, b: Array) -> Array:
    if np.issubdtype(a.dtype, np.integer):
        return _int_div(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(a, b)


def _mod(a: Array, b: Array, attrs: Mapping[str, Any]) -> Array:
    if np.issubdtype(a.dtype, np.integer) and np.any(b == 0):
        raise NotFoldable("integer modulo by zero")
    return np.fmod(a, b) if attrs.get("fmod", 0) else np.mod(a, b)


_BINARY: dict[str, Callable[[Array, Array], Array]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": _div,
    "Pow": np.power,
}
_COMPARE: dict[str, Callable[[Array, Array], Array]] = {
    "Equal": np.equal,
    "Less": np.less,
    "Greater": np.greater,
    "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and,
    "Or": np.logical_or,
    "Xor": np.logical_xor,
}
_UNARY: dict[str, Callable[[Array], Array]] = {
    "Neg": np.negative,
    "Abs": np.abs,
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Sqrt": np.sqrt,
    "Reciprocal": np.reciprocal,
    "Sign": np.sign,
    "Not": np.logical_not,
    "Identity": lambda x: x,
}
_VARIADIC: dict[str, Callable[..., Array]] = {
    "Max": np.maximum,
    "Min": np.minimum,
    "Sum": np.add,
}
_REDUCE: dict[str, Callable[..., Array]] = {
    "ReduceProd": np.prod,
    "ReduceSum": np.sum,
    "ReduceMax": np.max,
    "ReduceMin": np.min,
}


def _elementwise(op_type: str, attrs: Mapping[str, Any], inputs: Inputs) -> Array:
    if op_type in _UNARY:
        x = _req(inputs, 0)
        return np.asarray(_UNARY[op_type](x)).astype(x.dtype, copy=False)
    if op_type in _COMPARE:
        return np.asarray(_COMPARE[op_type](_req(inputs, 0), _req(inputs, 1)), dtype=bool)
    if op_type == "Mod":
        a = _req(inputs, 0)
        return np.asarray(_mod(a, _req(inputs, 1), attrs)).astype(a.dtype, copy=False)
    if op_type in _VARIADIC:
        arrays = [_req(inputs, i) for i in range(len(inputs))]
        out = arrays[0]
        for other in arrays[1:]:
            out = _VARIADIC[op_type](out, other)
        return np.asarray(out).astype(arrays[0].dtype, copy=False)
    a = _req(inputs, 0)
    return np.asarray(_BINARY[op_type](a, _req(inputs, 1))).astype(a.dtype, copy=False)


# ------------------------------------------------------------------ shapes
def _shape(attrs: Mapping[str, Any], inputs: Inputs) -> Array:
    dims = _req(inputs, 0).shape
    start, end = attrs.get("start", 0), attrs.get("end")
    return np.asarray(dims[start:end], dtype=np.int64)


def _reshape(attrs: Mapping[str, Any], inputs: Inputs) -> Array:
    x, shape = _req(inputs, 0), [int(d) for d in _req(inputs, 1).reshape(-1)]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    try:
        return x.reshape(shape)
    except ValueError as exc:
        raise NotFoldable(str(exc)) from exc


def _slice(attrs: Mapping[str, Any], inputs: Inputs, opset: int) -> Array:
    x = _req(inputs, 0)
    if opset < 10:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = attrs.get("axes"), None
    else:
        starts = [int(v) for v in _req(inputs, 1).reshape(-1)]
        ends = [int(v) for v in _req(inputs, 2).reshape(-1)]
        axes = _attr_axes({}, inputs, 3)
        steps = None if len(inputs) < 5 or inputs[4] is None else _req(inputs, 4).reshape(-1).tolist()
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    index: list[slice] = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if step == 0:
            raise NotFoldable("Slice step 0")
        index[axis] = slice(int(start), int(end), step)  # Python clamps as ONNX does
    return x[tuple(index)]


def _unsqueeze(attrs: Mapping[str, Any], inputs: Inputs) -> Array:
    axes = _attr_axes(attrs, inputs, 1)
    if axes is None:
        raise NotFoldable("Unsqueeze without axes")
    return np.expand_dims(_req(inputs, 0), axes)


def _squeeze(attrs: Mapping[str, Any], inputs: Inputs) -> Array:
    x, axes = _req(inputs, 0), _attr_axes(attrs, inputs, 1)
    if axes is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    try:
        return np.squeeze(x, axis=axes)
    except ValueError as exc:
        raise NotFoldable(str(exc)) from exc


def _constant_of_shape(attrs: Mapping[str, Any], inputs: Inputs) -> Array:
    shape = tuple(int(d) for d in _req(inputs, 0).reshape(-1))
    value = attrs.get("value")
    fill = np.zeros((), np.float32) if value is None else np.asarray(value).reshape(())
    return np.full(shape, fill, dtype=fill.dtype)


def _range(inputs: Inputs) -> Array:
    start, limit, delta = (_req(inputs, i).reshape(()) for i in range(3))
    if delta == 0:
        raise NotFoldable("Range delta 0")
    if start.dtype == np.float16:  # numpy steps in float16 (2048 + 1 == 2048); Range-27 does not
        raise NotFoldable("float16 Range: its precision depends on the opset and stash_type")
    return np.arange(start, limit, delta, dtype=start.dtype)  # type: ignore[call-overload]


def _expand(inputs: Inputs) -> Array:
    x, shape = _req(inputs, 0), tuple(int(d) for d in _req(inputs, 1).reshape(-1))
    try:
        return np.broadcast_to(x, np.broadcast_shapes(x.shape, shape)).copy()
    except ValueError as exc:
        raise NotFoldable(str(exc)) from exc


def _reduce(op_type: str, attrs: Mapping[str, Any], inputs: Inputs, opset: int) -> Array:
    x = _req(inputs, 0)
    from_input = opset >= 18 or (op_type == "ReduceSum" and opset >= 13)
    axes = _attr_axes({}, inputs, 1) if from_input else _attr_axes(attrs, (), 1)
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return x
        axes = None
    keep = bool(attrs.get("keepdims", 1))
    return np.asarray(_REDUCE[op_type](x, axis=axes, keepdims=keep)).astype(x.dtype, copy=False)


def _split(attrs: Mapping[str, Any], inputs: Inputs, n_outputs: int) -> tuple[Array, ...]:
    x = _req(inputs, 0)
    axis = attrs.get("axis", 0)
    sizes = _attr_axes({"axes": attrs["split"]} if "split" in attrs else {}, inputs, 1)
    if sizes is None:
        size = -(-x.shape[axis] // n_outputs)  # ceil, as ONNX splits unevenly (opset 18)
        sizes = tuple(min(size, x.shape[axis] - i * size) for i in range(n_outputs))
    bounds = np.cumsum(sizes)[:-1]
    return tuple(np.split(x, bounds, axis=axis))


def _cast(attrs: Mapping[str, Any], inputs: Inputs) -> Array:
    dtype = np.dtype(tensor_dtype_to_np_dtype(int(attrs["to"])))
    if dtype.kind not in "biuf":
        raise NotFoldable(f"Cast to {dtype}")
    return _req(inputs, 0).astype(dtype)


def _shape_ops(op_type: str, attrs: Mapping[str, Any], inputs: Inputs, opset: int) -> Array:
    x = _req(inputs, 0)
    if op_type == "Gather":
        try:
            return np.take(x, _req(inputs, 1), axis=attrs.get("axis", 0))
        except IndexError as exc:
            raise NotFoldable(str(exc)) from exc
    if op_type == "Concat":
        return np.concatenate([_req(inputs, i) for i in range(len(inputs))], axis=attrs["axis"])
    if op_type == "Transpose":
        perm = attrs.get("perm")
        return np.transpose(x, None if perm is None else tuple(perm))
    if op_type == "Flatten":
        axis = attrs.get("axis", 1)
        axis = axis + x.ndim if axis < 0 else axis
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    if op_type == "Tile":
        return np.tile(x, tuple(int(r) for r in _req(inputs, 1).reshape(-1)))
    if op_type == "Where":
        return np.where(x, _req(inputs, 1), _req(inputs, 2)).astype(_req(inputs, 1).dtype)
    if op_type == "CastLike":
        return x.astype(_req(inputs, 1).dtype)
    if op_type == "Size":
        return np.asarray(x.size, dtype=np.int64)
    if op_type == "NonZero":
        return np.asarray(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)
    return _DISPATCH[op_type](attrs, inputs, opset)


_DISPATCH: dict[str, Callable[[Mapping[str, Any], Inputs, int], Array]] = {
    "Shape": lambda a, i, _: _shape(a, i),
    "Reshape": lambda a, i, _: _reshape(a, i),
    "Slice": _slice,
    "Unsqueeze": lambda a, i, _: _unsqueeze(a, i),
    "Squeeze": lambda a, i, _: _squeeze(a, i),
    "ConstantOfShape": lambda a, i, _: _constant_of_shape(a, i),
    "Range": lambda _a, i, _o: _range(i),
    "Expand": lambda _a, i, _o: _expand(i),
    "Cast": lambda a, i, _: _cast(a, i),
}
_SHAPE_OPS = frozenset(
    {"Gather", "Concat", "Transpose", "Flatten", "Tile", "Where", "CastLike", "Size", "NonZero"}
) | frozenset(_DISPATCH)

FOLDABLE: frozenset[str] = (
    _SHAPE_OPS
    | frozenset(_BINARY)
    | frozenset(_COMPARE)
    | frozenset(_UNARY)
    | frozenset(_VARIADIC)
    | frozenset(_REDUCE)
    | {"Mod", "Split", "Constant"}
)
"""Op types :func:`evaluate` handles (``If`` is folded by the importer, which owns subgraphs)."""


def _constant(attrs: Mapping[str, Any]) -> Array:
    for key in ("value", "value_int", "value_ints", "value_float", "value_floats"):
        if key in attrs:
            value = attrs[key]
            if key.startswith("value_int"):
                return np.asarray(value, dtype=np.int64)
            if key.startswith("value_float"):
                return np.asarray(value, dtype=np.float32)
            return np.asarray(value)
    raise NotFoldable(f"Constant with attributes {sorted(attrs)}")


def evaluate(
    op_type: str, attrs: Mapping[str, Any], inputs: Inputs, *, opset: int, n_outputs: int = 1
) -> tuple[Array, ...]:
    """The outputs of one op on numpy inputs; raises :class:`NotFoldable` if not handled."""
    if op_type == "Constant":
        out: Array | tuple[Array, ...] = _constant(attrs)
    elif op_type == "Split":
        out = _split(attrs, inputs, n_outputs)
    elif op_type in _REDUCE:
        out = _reduce(op_type, attrs, inputs, opset)
    elif op_type in _SHAPE_OPS:
        out = _shape_ops(op_type, attrs, inputs, opset)
    elif op_type in FOLDABLE:
        out = _elementwise(op_type, attrs, inputs)
    else:
        raise NotFoldable(f"no evaluator for {op_type}")
    outs = out if isinstance(out, tuple) else (out,)
    if len(outs) != n_outputs:
        raise NotFoldable(f"{op_type} gave {len(outs)} outputs, the node declares {n_outputs}")
    return tuple(np.asarray(o).copy(order="C") for o in outs)  # own memory, keep 0-d

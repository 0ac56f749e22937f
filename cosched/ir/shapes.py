"""Static shapes for one tenant: fix the input dims, then infer and fold to a fixed point.

The loop, per tenant:

1. build a light working model: the remaining nodes, graph inputs with their fixed shapes,
   small initializers with their data (shape initializers feed Reshape and friends), large
   ones as typed graph inputs (their data is never copied), folded values as initializers;
2. run ONNX shape inference on it (strict, with data propagation);
3. walk the nodes once and evaluate, with :mod:`cosched.ir.folding`, every node whose inputs
   are all known values (``Shape``/``Size`` need only a static input shape);
4. repeat while step 3 folded something: a folded ``Reshape`` shape gives its output a static
   shape, which lets the next ``Shape`` of it fold in turn.

What survives is dead-code eliminated; every remaining tensor must then have a fully static
shape, or a :class:`ShapeError` names the tensor and the op producing it.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from cosched.errors import ConfigError, ShapeError, UnsupportedOpError
from cosched.ir.folding import FOLDABLE, NotFoldable, evaluate, shape_only
from cosched.ir.onnx_io import ONNX_DOMAINS, attr_values, initializer_array, np_dtype

__all__ = ["FOLD_LIMIT", "Resolution", "Typed", "carries_data", "fix_inputs", "resolve"]

FOLD_LIMIT = 1 << 16
#: The largest dim an ONNX shape (int64) holds.
MAX_DIM = 2**63 - 1
"""Largest folded value (elements, all outputs of one op) and largest initializer whose data
the working model carries; larger values stay tensors that ops compute or read."""

Dims = tuple[int | None, ...]
NamedNode = tuple[str, onnx.NodeProto]


@dataclass(frozen=True)
class Typed:
    """A tensor's element type (ONNX enum) and shape (``None`` dims are still symbolic)."""

    elem_type: int
    shape: Dims


@dataclass(frozen=True)
class Resolution:
    """What shape resolution leaves of one tenant (all names model-local)."""

    nodes: tuple[NamedNode, ...]
    activations: Mapping[str, tuple[tuple[int, ...], str]]
    constants: Mapping[str, np.ndarray] = field(repr=False)
    weights: tuple[str, ...]


# --------------------------------------------------------------- input dims
def _input_type(tenant: str, vi: onnx.ValueInfoProto) -> Typed:
    if not vi.type.HasField("tensor_type"):
        raise UnsupportedOpError(
            f"tenant {tenant!r}: graph input {vi.name!r} is not a tensor ({vi.type.WhichOneof('value')}); "
            "only tensor inputs are supported"
        )
    tt = vi.type.tensor_type
    np_dtype(tt.elem_type, f"tenant {tenant!r}: input {vi.name!r}")
    if not tt.HasField("shape"):
        return Typed(tt.elem_type, ())  # unknown rank: only an explicit input shape fixes it
    return Typed(tt.elem_type, tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim))


def _apply_shape(tenant: str, name: str, typed: Typed, given: Sequence[int], ranked: bool) -> Typed:
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise ConfigError(f"tenant {tenant!r}: shape {given!r} for input {name!r} must be a list of integers")
    dims = tuple(given)
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= MAX_DIM for d in dims):
        raise ConfigError(
            f"tenant {tenant!r}: shape {dims} for input {name!r} must be integers from 0 to 2**63 - 1"
        )
    for axis, want in enumerate(dims):
        have = typed.shape[axis] if ranked and axis < len(typed.shape) else None
        if want < 1 and have is None:
            raise ConfigError(
                f"tenant {tenant!r}: the given shape {_fmt(dims)} of input {name!r} sets axis {axis} to "
                f"{want}; a dim the model leaves open must be >= 1, as a batch must"
            )
    if ranked and len(dims) != len(typed.shape):
        raise ShapeError(
            f"tenant {tenant!r}: input {name!r} has rank {len(typed.shape)} {_fmt(typed.shape)}, "
            f"but the given shape {_fmt(dims)} has rank {len(dims)}"
        )
    for axis, (have, want) in enumerate(zip(typed.shape, dims, strict=False)):
        if have is not None and have != want:
            raise ShapeError(
                f"tenant {tenant!r}: input {name!r} has static dim {have} at axis {axis} "
                f"{_fmt(typed.shape)}, but the given shape {_fmt(dims)} says {want}"
            )
    return Typed(typed.elem_type, tuple(int(d) for d in dims))


def _apply_batch(tenant: str, name: str, typed: Typed, batch: int) -> Typed:
    first = typed.shape[0]
    if first is None:
        return Typed(typed.elem_type, (batch, *typed.shape[1:]))
    if first != batch:
        raise ConfigError(
            f"tenant {tenant!r}: batch {batch} given, but input {name!r} has a static leading dim "
            f"{first} {_fmt(typed.shape)} and no symbolic batch dim; export the model with a dynamic "
            f"batch, or pass batch {first}"
        )
    return typed


def fix_inputs(
    tenant: str,
    inputs: Sequence[onnx.ValueInfoProto],
    batch: int | None,
    shapes: Mapping[str, Sequence[int]],
) -> dict[str, Typed]:
    """Static types of a tenant's graph inputs after applying ``shapes`` and then ``batch``."""
    typed = {vi.name: _input_type(tenant, vi) for vi in inputs}
    ranked = {vi.name: vi.type.tensor_type.HasField("shape") for vi in inputs}
    unknown = sorted(set(shapes) - set(typed))
    if unknown:
        raise ConfigError(
            f"tenant {tenant!r}: shape given for unknown input(s) {unknown}; inputs are {sorted(typed)}"
        )
    for name, dims in shapes.items():
        typed[name] = _apply_shape(tenant, name, typed[name], dims, ranked[name])
    if batch is not None:
        batched = [name for name, t in typed.items() if t.shape]
        if not batched:
            raise ConfigError(
                f"tenant {tenant!r}: batch {batch} given, but no input has a batch dim "
                f"(inputs: {sorted(typed)} are all scalars)"
            )
        for name in batched:
            typed[name] = _apply_batch(tenant, name, typed[name], batch)
    for name, t in typed.items():
        if not ranked[name] and name not in shapes:
            raise ShapeError(f"tenant {tenant!r}: input {name!r} has unknown rank; give its shape (--shape {tenant}:{name}=...)")
        if any(d is None for d in t.shape):
            axis = t.shape.index(None)
            hint = "--batch N or batch=" if axis == 0 else f"--shape {tenant}:{name}=... or input_shapes="
            raise ShapeError(
                f"tenant {tenant!r}: input {name!r} has a symbolic dim at axis {axis} {_fmt(t.shape)}; "
                f"fix it with {hint}"
            )
    return typed


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + "x".join("?" if d is None else str(d) for d in shape) + "]"


# ------------------------------------------------------------- the fold loop
def resolve(
    tenant: str, model: onnx.ModelProto, nodes: Sequence[NamedNode], inputs: Mapping[str, Typed]
) -> Resolution:
    """Infer and fold ``nodes`` (topologically sorted) to a fixed point; see the module doc."""
    inits = {t.name: t for t in model.graph.initializer}
    small = {name for name, t in inits.items() if carries_data(t)}
    # Integer initializers feed shape computations; float ones are learned weights, and values
    # computed from them stay ops whatever their size (so tiny and full models fold alike).
    values = {
        n: initializer_array(inits[n], f"tenant {tenant!r}: initializer {n!r}")
        for n in small
        if inits[n].data_type in _INDEX_TYPES
    }
    folded: dict[str, np.ndarray] = {}
    env = ChainMap(folded, values)
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 0)
    outputs = [o.name for o in model.graph.output]
    remaining = list(nodes)
    while True:  # each round folds at least one node, so this ends
        work = _working_model(model, remaining, inputs, small, folded, outputs)
        inferred = _infer(tenant, work)
        kept: list[NamedNode] = []
        for name, node in remaining:  # a value folded here is seen by the nodes after it
            outs = _evaluate(tenant, name, node, env, inferred, opset)
            if outs is None:
                kept.append((name, node))
            else:
                folded.update((out, value) for out, value in zip(node.output, outs, strict=True) if out)
        if len(kept) == len(remaining):
            break
        remaining = kept
    remaining = _live(remaining, outputs)
    _reject_control_flow(tenant, remaining)
    used = {i for _, node in remaining for i in node.input if i} | set(outputs)
    return Resolution(
        nodes=tuple(remaining),
        activations=_static_types(tenant, remaining, inferred),
        constants={name: value for name, value in folded.items() if name in used},
        weights=tuple(name for name in inits if name in used),
    )


_INDEX_TYPES = frozenset(
    {onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.BOOL,
     onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT8}
)


def carries_data(tensor: onnx.TensorProto) -> bool:
    small = int(np.prod(tensor.dims, dtype=np.int64)) <= FOLD_LIMIT
    return small and tensor.data_location != onnx.TensorProto.EXTERNAL


def _working_model(
    model: onnx.ModelProto,
    nodes: Sequence[NamedNode],
    inputs: Mapping[str, Typed],
    small: set[str],
    folded: Mapping[str, np.ndarray],
    outputs: Sequence[str],
) -> onnx.ModelProto:
    work = onnx.ModelProto(ir_version=max(model.ir_version, 4))
    work.opset_import.extend(model.opset_import)
    graph = work.graph
    graph.name = model.graph.name
    graph.node.extend(node for _, node in nodes)
    for name, typed in inputs.items():
        graph.input.append(onnx.helper.make_tensor_value_info(name, typed.elem_type, typed.shape))
    for tensor in model.graph.initializer:
        if tensor.name in small:
            graph.initializer.append(tensor)
        else:  # large weights: their type is all inference needs; never copy the data
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    used = {i for _, node in nodes for i in node.input} | set(outputs)
    graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in folded.items() if n in used)
    for out in model.graph.output:
        elem = out.type.tensor_type.elem_type if out.type.HasField("tensor_type") else 0
        graph.output.append(onnx.helper.make_tensor_value_info(out.name, elem, None))
    return work


def _infer(tenant: str, work: onnx.ModelProto) -> dict[str, Typed]:
    try:
        inferred = onnx.shape_inference.infer_shapes(work, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        detail = " ".join(str(exc).split())
        raise ShapeError(f"tenant {tenant!r}: ONNX shape inference failed: {detail}") from exc
    types: dict[str, Typed] = {}
    graph = inferred.graph
    for vi in (*graph.input, *graph.value_info, *graph.output):
        if vi.type.HasField("tensor_type"):
            tt = vi.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
            types[vi.name] = Typed(tt.elem_type, shape if tt.HasField("shape") else (None,))
    return types


def _evaluate(
    tenant: str,
    name: str,
    node: onnx.NodeProto,
    env: Mapping[str, np.ndarray],
    inferred: Mapping[str, Typed],
    opset: int,
) -> tuple[np.ndarray, ...] | None:
    """The node's output values if every input is known and the op can be evaluated."""
    if node.domain not in ONNX_DOMAINS:
        return None
    if node.op_type == "If":
        return _evaluate_if(tenant, name, node, env, opset)
    if node.op_type not in FOLDABLE:
        return None
    args: list[np.ndarray | None] = []
    for k, tensor in enumerate(node.input):
        if not tensor:
            args.append(None)
        elif tensor in env:
            args.append(env[tensor])
        elif k == 0 and node.op_type in ("Shape", "Size") and _is_static(inferred.get(tensor)):
            args.append(shape_only(inferred[tensor].shape, np.uint8))  # type: ignore[arg-type]
        else:
            return None
    attrs = attr_values(node, repr(f"{tenant}/{name}"))
    try:
        outs = evaluate(node.op_type, attrs, args, opset=opset, n_outputs=len(node.output))
    except NotFoldable:
        return None
    if node.op_type != "Constant" and sum(o.size for o in outs) > FOLD_LIMIT:
        return None
    if any(o.dtype.name not in _SUPPORTED for o in outs):
        return None
    return outs


_SUPPORTED = frozenset(
    {"float16", "float32", "float64", "bool"}
    | {f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)}
)


def _evaluate_if(
    tenant: str, name: str, node: onnx.NodeProto, env: Mapping[str, np.ndarray], opset: int
) -> tuple[np.ndarray, ...] | None:
    """An ``If`` whose condition is known and whose taken branch folds entirely."""
    cond = env.get(node.input[0]) if node.input else None
    if cond is None or cond.size != 1:
        return None
    attrs = attr_values(node, repr(f"{tenant}/{name}"), keep_graphs=True)
    branch: onnx.GraphProto = attrs["then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"]
    local: ChainMap[str, np.ndarray] = ChainMap({}, dict(env))
    for tensor in branch.initializer:
        local[tensor.name] = initializer_array(tensor, f"tenant {tenant!r}: op {name!r} branch initializer {tensor.name!r}")
    for k, inner in enumerate(branch.node):
        outs = _evaluate(tenant, f"{name}/{inner.name or k}", inner, local, {}, opset)
        if outs is None:
            return None
        local.update((o, v) for o, v in zip(inner.output, outs, strict=True) if o)
    results = tuple(local.get(out.name) for out in branch.output)
    if len(results) != len(node.output) or any(r is None for r in results):
        return None
    return results  # type: ignore[return-value]


def _is_static(typed: Typed | None) -> bool:
    return typed is not None and None not in typed.shape


def _live(nodes: Sequence[NamedNode], outputs: Sequence[str]) -> list[NamedNode]:
    """Nodes that contribute to a graph output (ONNX ops have no side effects)."""
    needed = set(outputs)
    live: list[NamedNode] = []
    for name, node in reversed(nodes):
        if any(out in needed for out in node.output if out):
            live.append((name, node))
            needed.update(i for i in node.input if i)
    return live[::-1]


def _reject_control_flow(tenant: str, nodes: Sequence[NamedNode]) -> None:
    graph_kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    for name, node in nodes:
        if any(a.type in graph_kinds for a in node.attribute):
            raise UnsupportedOpError(
                f"tenant {tenant!r}: op '{tenant}/{name}' ({node.op_type}) has a subgraph and does not "
                "fold to constants (its condition or inputs are not constant); control flow is not supported"
            )


def _static_types(
    tenant: str, nodes: Sequence[NamedNode], inferred: Mapping[str, Typed]
) -> dict[str, tuple[tuple[int, ...], str]]:
    types: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, node in nodes:
        for out in node.output:
            if not out:
                continue
            typed = inferred.get(out)
            where = f"tensor '{tenant}/{out}' produced by op '{tenant}/{name}' ({node.op_type})"
            if not _is_static(typed):
                found = "nothing" if typed is None else _fmt(typed.shape)
                raise ShapeError(
                    f"tenant {tenant!r}: {where} has no static shape after shape inference and "
                    f"constant folding (inferred: {found}); fix the remaining symbolic input dims "
                    "with batch/input_shapes, or the op is not supported by ONNX shape inference"
                )
            assert typed is not None
            if typed.elem_type == onnx.TensorProto.UNDEFINED:
                raise ShapeError(f"tenant {tenant!r}: {where} has no known element type after shape inference")
            types[out] = (tuple(int(d) for d in typed.shape), np_dtype(typed.elem_type, f"tenant {tenant!r}: {where}"))  # type: ignore[arg-type]
    return types

"""Import N ONNX models (one per tenant) into one merged :class:`~cosched.ir.Graph`.

Per tenant, in order, each step rejecting bad input with an error naming the culprit:

1. read the file (or take the proto) and hash it            -> ModelLoadError
2. inline local functions; refuse an empty graph             -> GraphError
3. refuse ops outside the default ONNX domain                -> UnsupportedOpError
4. sort the nodes, refusing undefined tensors and cycles     -> GraphError
5. onnx.checker on a copy without large weight data          -> ModelLoadError
6. fix input dims from ``input_shapes`` then ``batch``        -> ConfigError / ShapeError
7. shape inference + constant folding to a fixed point       -> ShapeError (see shapes.py)
8. namespace every name ``tenant/name`` and build the values

Then the tenants' ops are concatenated (tenant by tenant, each in topological order), one
task per op is made, and the merged graph is verified.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner

from cosched.errors import ConfigError, GraphError, ModelLoadError, UnsupportedOpError
from cosched.ir.graph import (
    SEP,
    Graph,
    Op,
    Task,
    TenantInfo,
    TensorInfo,
    WeightRef,
    frozen_mapping,
    qualify,
)
from cosched.ir.onnx_io import (
    ONNX_DOMAINS,
    Source,
    attr_values,
    check_model,
    initializer_array,
    np_dtype,
    opset_versions,
    read_source,
    sort_nodes,
)
from cosched.ir.shapes import MAX_DIM, Resolution, carries_data, fix_inputs, resolve

__all__ = ["ModelSource", "load_models", "read_weights"]

ModelSource = str | os.PathLike[str] | onnx.ModelProto
Shape = Sequence[int]


@dataclass(frozen=True)
class _Part:
    """One imported tenant, before merging."""

    info: TenantInfo
    ops: tuple[Op, ...]
    tensors: dict[str, TensorInfo]
    weights: dict[str, WeightRef] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)


def load_models(
    sources: Sequence[ModelSource] | ModelSource,
    *,
    names: Sequence[str] | None = None,
    batch: int | Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Mapping[str, Shape]] | None = None,
) -> Graph:
    """Import one model per tenant into one merged, verified graph with static shapes.

    ``sources`` are ONNX file paths or ``onnx.ModelProto`` values (a single one is accepted
    too). Tenant names are ``names``, else each file's stem, else an in-memory model's graph
    name. ``batch`` (one int for every tenant, or tenant -> int) fixes the leading dim of every
    input; ``input_shapes`` (tenant -> input name -> full shape) fixes any dim and is applied
    first. Weights stay in their files (:func:`read_weights` reads them); folded shape
    computations become ``graph.constants``. Every op gets its own task; ``Op.cost`` is None.
    """
    if isinstance(sources, (str, os.PathLike, onnx.ModelProto)):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise ConfigError("no models given; pass at least one ONNX file or ModelProto")
    read = [read_source(s) for s in sources]
    tenants = _tenant_names(read, names)
    batches = _batches(batch, tenants)
    shapes = _input_shapes(input_shapes, tenants)
    parts = [_import(src, t, batches[t], shapes.get(t, {})) for src, t in zip(read, tenants, strict=True)]
    return _merge(parts)


# ------------------------------------------------------------------ options
def _tenant_names(read: Sequence[Source], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if isinstance(names, str) or len(names) != len(read):
            raise ConfigError(f"names must list one tenant name per model ({len(read)}), got {names!r}")
        tenants = list(names)
    else:
        tenants = []
        for i, src in enumerate(read):
            stem = src.path.stem if src.path is not None else src.model.graph.name
            if not stem:
                raise ConfigError(f"in-memory model #{i} has no graph name; pass names=[...] to name its tenant")
            tenants.append(stem)
    seen: set[str] = set()
    for tenant, src in zip(tenants, read, strict=True):
        if not isinstance(tenant, str) or not tenant or SEP in tenant:
            raise ConfigError(f"tenant name {tenant!r} of {src.label} must be a non-empty string without {SEP!r}")
        if tenant in seen:
            raise ConfigError(
                f"duplicate tenant name {tenant!r} (again for {src.label}); tenant names must be "
                "unique: rename the file or pass names=[...]"
            )
        seen.add(tenant)
    return tenants


def _check_batch(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{what} must be an integer >= 1, got {value!r}")
    if value > MAX_DIM:
        raise ConfigError(f"{what} must be at most 2**63 - 1, the largest ONNX dim, got {value!r}")
    return int(value)


def _unknown_tenants(given: Mapping[str, Any], tenants: Sequence[str], what: str) -> None:
    unknown = sorted(set(given) - set(tenants))
    if unknown:
        raise ConfigError(f"{what} names unknown tenant(s) {unknown}; tenants are {list(tenants)}")


def _batches(batch: int | Mapping[str, int] | None, tenants: Sequence[str]) -> dict[str, int | None]:
    if batch is None:
        return dict.fromkeys(tenants)
    if isinstance(batch, Mapping):
        _unknown_tenants(batch, tenants, "batch")
        return {t: None if t not in batch else _check_batch(batch[t], f"batch of tenant {t!r}") for t in tenants}
    value = _check_batch(batch, "batch")
    return dict.fromkeys(tenants, value)


def _input_shapes(
    shapes: Mapping[str, Mapping[str, Shape]] | None, tenants: Sequence[str]
) -> dict[str, dict[str, Shape]]:
    if shapes is None:
        return {}
    if not isinstance(shapes, Mapping):
        raise ConfigError(f"input_shapes must map tenant -> {{input name: shape}}, got {shapes!r}")
    _unknown_tenants(shapes, tenants, "input_shapes")
    for tenant, per_input in shapes.items():
        if not isinstance(per_input, Mapping):
            raise ConfigError(f"input_shapes[{tenant!r}] must map input name -> shape, got {per_input!r}")
    return {tenant: dict(per_input) for tenant, per_input in shapes.items()}


# ---------------------------------------------------------------- a tenant
def _import(src: Source, tenant: str, batch: int | None, shapes: Mapping[str, Shape]) -> _Part:
    label = f"tenant {tenant!r} ({src.label})"
    model = onnx.inliner.inline_local_functions(src.model) if src.model.functions else src.model
    graph = model.graph
    if not graph.node:
        raise GraphError(f"{label}: the graph has no ops; nothing to compile")
    for i, node in enumerate(graph.node):
        if node.domain not in ONNX_DOMAINS:
            raise UnsupportedOpError(
                f"{label}: op {node.name or f'#{i}'!r} ({node.op_type}) is in domain {node.domain!r}; "
                "only the default ONNX domain ('' / 'ai.onnx') is supported"
            )
    init_names = {t.name for t in graph.initializer}
    real_inputs = [vi for vi in graph.input if vi.name not in init_names]
    available = init_names | {vi.name for vi in real_inputs}
    nodes = sort_nodes(graph, tenant, available)
    produced = {out for _, node in nodes for out in node.output}
    for out in graph.output:
        if out.name not in produced and out.name not in available:
            raise GraphError(f"{label}: graph output {out.name!r} is produced by no op and is no input or initializer")
    check_model(model, [node for _, node in nodes], label, carries_data)
    fixed = fix_inputs(tenant, real_inputs, batch, shapes)
    resolution = resolve(tenant, model, _name_nodes(nodes), fixed)
    info = TenantInfo(
        name=tenant,
        source=str(src.path) if src.path is not None else None,
        sha256=src.sha256,
        opsets=frozen_mapping(opset_versions(model)),
        inputs=tuple((vi.name, qualify(tenant, vi.name)) for vi in real_inputs),
        outputs=tuple((o.name, qualify(tenant, o.name)) for o in graph.output),
        batch=batch,
        model=src.model if src.path is None else None,
    )
    tensors = _tensors(tenant, model, fixed, resolution)
    return _Part(
        info=info,
        ops=_ops(tenant, resolution, opset_versions(model).get("", 0)),
        tensors=tensors,
        weights={qualify(tenant, w): WeightRef(tenant, w) for w in resolution.weights},
        constants={qualify(tenant, n): v for n, v in resolution.constants.items()},
    )


def _name_nodes(nodes: Sequence[tuple[int, onnx.NodeProto]]) -> list[tuple[str, onnx.NodeProto]]:
    """Model-local op names: the node's own, else ``OpType_<index>``; repeats get a suffix."""
    used: set[str] = set()
    named = []
    for index, node in nodes:
        base = node.name or f"{node.op_type}_{index}"
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        named.append((name, node))
    return named


def _ops(tenant: str, resolution: Resolution, opset: int) -> tuple[Op, ...]:
    def q(name: str) -> str:
        return qualify(tenant, name) if name else ""

    ops = []
    for name, node in resolution.nodes:
        ops.append(
            Op(
                name=qualify(tenant, name),
                op_type=node.op_type,
                tenant=tenant,
                inputs=tuple(q(i) for i in node.input),
                outputs=tuple(q(o) for o in node.output),
                attrs=frozen_mapping(attr_values(node, repr(qualify(tenant, name)))),
                domain="",
                opset=opset,
            )
        )
    return tuple(ops)


def _tensors(tenant: str, model: onnx.ModelProto, fixed: Mapping[str, Any], res: Resolution) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}

    def add(name: str, shape: Sequence[int], dtype: str, kind: Any) -> None:
        q = qualify(tenant, name)
        tensors[q] = TensorInfo(q, tuple(int(d) for d in shape), dtype, tenant, kind)

    for name, typed in fixed.items():
        add(name, typed.shape, np_dtype(typed.elem_type, f"tenant {tenant!r}: input {name!r}"), "input")
    inits = {t.name: t for t in model.graph.initializer}
    for name in res.weights:
        t = inits[name]
        add(name, t.dims, np_dtype(t.data_type, f"tenant {tenant!r}: initializer {name!r}"), "weight")
    for name, value in res.constants.items():
        add(name, value.shape, value.dtype.name, "constant")
    for name, (shape, dtype) in res.activations.items():
        add(name, shape, dtype, "activation")
    return tensors


# ------------------------------------------------------------------- merge
def _merge(parts: Sequence[_Part]) -> Graph:
    ops = tuple(op for part in parts for op in part.ops)
    tensors: dict[str, TensorInfo] = {}
    weights: dict[str, WeightRef] = {}
    constants: dict[str, np.ndarray] = {}
    for part in parts:
        tensors.update(part.tensors)
        weights.update(part.weights)
        constants.update(part.constants)
    tasks = tuple(Task(id=i, tenant=op.tenant, ops=(op.name,), name=op.name) for i, op in enumerate(ops))
    graph = Graph(
        tenants=tuple(part.info for part in parts),
        ops=ops,
        tensors=frozen_mapping(tensors),
        weights=frozen_mapping(weights),
        constants=frozen_mapping(constants),
        tasks=tasks,
    )
    return graph.verify()


# ----------------------------------------------------------------- weights
def read_weights(graph: Graph, tenant: str, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The values of tenant ``tenant``'s weights, keyed by graph-wide tensor name.

    Reads the tenant's ONNX file again (external data from next to it) and refuses a file
    whose sha256 differs from the one imported; an in-memory model is read from its proto.
    A weight whose :class:`WeightRef` has a slice is that part of its initializer (a copy).
    ``names`` restricts the result to those weights (those a device needs).
    """
    info = graph.tenant(tenant)
    wanted: dict[str, list[tuple[str, tuple[int, int, int] | None]]] = {}
    for name, ref in graph.weights.items():
        if ref.tenant == tenant and (names is None or name in names):
            wanted.setdefault(ref.initializer, []).append((name, ref.slice))
    model, base_dir = _weights_model(info)
    values: dict[str, np.ndarray] = {}
    for tensor in model.graph.initializer:
        if tensor.name in wanted:
            what = f"tenant {tenant!r}: initializer {tensor.name!r}"
            array = initializer_array(tensor, what, base_dir)
            for name, part in wanted[tensor.name]:
                values[name] = array if part is None else _slice(array, part, what)
    missing = sorted(set(wanted) - {t.name for t in model.graph.initializer})
    if missing:
        raise ModelLoadError(f"tenant {tenant!r}: initializer(s) {missing[:5]} missing from {info.source or 'the model'}")
    return values


def _slice(array: np.ndarray, part: tuple[int, int, int], what: str) -> np.ndarray:
    axis, start, stop = part
    if not (0 <= axis < array.ndim and 0 <= start < stop <= array.shape[axis]):
        raise ModelLoadError(f"{what}: slice {start}:{stop} of axis {axis} does not fit its shape {array.shape}")
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    return np.ascontiguousarray(array[tuple(index)])


def _weights_model(info: TenantInfo) -> tuple[onnx.ModelProto, Path | None]:
    if info.source is None:
        if info.model is None:
            raise ModelLoadError(f"tenant {info.name!r} was imported from memory and its model is not kept")
        return info.model, None
    path = Path(info.source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"tenant {info.name!r}: model file {path} cannot be read: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.sha256:
        raise ModelLoadError(
            f"tenant {info.name!r}: model file {path} changed since import "
            f"(sha256 {digest[:12]}..., imported {info.sha256[:12]}...); import it again"
        )
    return onnx.load_model_from_string(data), path.parent

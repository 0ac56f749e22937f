"""The ONNX protobuf boundary: reading model files, structural checks, attributes, dtypes, weights.

Everything here turns protobuf failures into :class:`cosched.errors.CoschedError` subclasses
that name the file, tenant, op or tensor at fault. Only the importer's modules
(:mod:`cosched.ir.onnx_import`, :mod:`cosched.ir.shapes`, :mod:`cosched.ir.folding` and this one)
import ``onnx``. The way back out is here too: :func:`ops_model` writes some of a graph's ops as
a standalone ONNX model (how onnxruntime runs tasks, :mod:`cosched.execution.ort`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from cosched.errors import GraphError, ModelLoadError, UnsupportedOpError

__all__ = [
    "ONNX_DOMAINS",
    "Source",
    "attr_values",
    "check_model",
    "initializer_array",
    "np_dtype",
    "ops_model",
    "opset_versions",
    "read_source",
    "sort_nodes",
]

ONNX_DOMAINS = ("", "ai.onnx")
"""Op domains the importer accepts: the default ONNX operator set."""

_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class Source:
    """One model as read: the proto (external data not loaded), its file, and its sha256."""

    model: onnx.ModelProto = field(repr=False)
    path: Path | None
    sha256: str

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"in-memory model {self.model.graph.name!r}"


def np_dtype(elem_type: int, what: str) -> str:
    """The numpy dtype name of an ONNX element type; ``what`` names the tensor for errors."""
    try:
        return _DTYPES[elem_type]
    except KeyError:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else elem_type
        supported = ", ".join(sorted(_DTYPES.values()))
        raise UnsupportedOpError(
            f"{what} has element type {name}, which cosched does not support (supported: {supported})"
        ) from None


# ------------------------------------------------------------------ reading
def read_source(source: str | os.PathLike[str] | onnx.ModelProto) -> Source:
    """Read a model file (or take a proto), check it parses, and hash it."""
    if isinstance(source, onnx.ModelProto):
        digest = hashlib.sha256(source.SerializeToString(deterministic=True)).hexdigest()
        _require_graph(source, f"in-memory model {source.graph.name!r}")
        return Source(source, None, digest)
    if not isinstance(source, (str, os.PathLike)):
        raise ModelLoadError(f"a model must be a file path or an onnx.ModelProto, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelLoadError(f"model path {path} is a directory, expected an .onnx file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"model file {path} cannot be read: {exc.strerror}") from exc
    if not data:
        raise ModelLoadError(f"model file {path} is empty; expected a serialized ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"model file {path} cannot be parsed as ONNX: it is truncated or not an ONNX model ({exc})"
        ) from exc
    _require_graph(model, f"model file {path}")
    _check_external_files(model, path)
    return Source(model, path, hashlib.sha256(data).hexdigest())


def _require_graph(model: onnx.ModelProto, label: str) -> None:
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelLoadError(
            f"{label} is not an ONNX model: it has no ir_version or no graph "
            f"(ir_version={model.ir_version}); is this the right file?"
        )


def _check_external_files(model: onnx.ModelProto, path: Path) -> None:
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            if not (path.parent / location).is_file():
                raise ModelLoadError(
                    f"model file {path}: initializer {tensor.name!r} keeps its data in external "
                    f"file {location!r}, which does not exist next to the model"
                )


# --------------------------------------------------------------- structure
def sort_nodes(
    graph: onnx.GraphProto, tenant: str, available: Iterable[str]
) -> list[tuple[int, onnx.NodeProto]]:
    """The graph's nodes with their indexes, in a topological order (sorted graphs keep theirs).

    Raises :class:`GraphError` for a tensor that no node produces and that is no graph input
    or initializer (naming it and its reader), for a tensor produced twice, and for a cycle.
    """
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    known = set(available)
    for i, node in enumerate(nodes):
        for out in node.output:
            if not out:
                continue
            if out in producer or out in known:
                raise GraphError(f"tenant {tenant!r}: tensor {out!r} is written twice (again by op {_label(node, i)})")
            producer[out] = i
    deps: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for name in node.input:
            if not name or name in known:
                continue
            if name not in producer:
                raise GraphError(
                    f"tenant {tenant!r}: op {_label(node, i)} reads tensor {name!r}, which is no graph "
                    "input, no initializer (missing initializer?) and no op's output"
                )
            deps[i].append(producer[name])
    return [(i, nodes[i]) for i in _topological(deps, nodes, tenant)]


def _label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"#{index} ({node.op_type})"


def _topological(deps: list[list[int]], nodes: list[onnx.NodeProto], tenant: str) -> list[int]:
    if all(d < i for i, ds in enumerate(deps) for d in ds):
        return list(range(len(deps)))
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(deps)))
    dag.add_edges_from((d, i) for i, ds in enumerate(deps) for d in ds)
    try:
        return list(nx.lexicographical_topological_sort(dag))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(dag)
        names = " -> ".join(_label(nodes[u], u) for u, _ in cycle)
        raise GraphError(f"tenant {tenant!r}: the graph has a cycle: {names} -> back to the first") from None


def check_model(
    model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto], label: str, keep_data: Callable[[onnx.TensorProto], bool]
) -> None:
    """onnx.checker on ``model`` with ``nodes``; a failure is a :class:`ModelLoadError`.

    It checks a light copy: initializers for which ``keep_data`` is false become typed graph
    inputs, so large weights are neither copied nor serialised for the checker.
    """
    copy = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    copy.opset_import.extend(model.opset_import)
    graph = copy.graph
    graph.name = model.graph.name
    graph.node.extend(nodes)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    declared = {vi.name for vi in model.graph.input}
    for tensor in model.graph.initializer:
        if keep_data(tensor):
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    try:
        onnx.checker.check_model(copy)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{label} fails onnx.checker: {first}") from exc


# -------------------------------------------------------------- attributes
def attr_values(node: onnx.NodeProto, what: str, *, keep_graphs: bool = False) -> dict[str, Any]:
    """A node's attributes as Python values: int, float, str, bytes, tuples, numpy arrays.

    Graph attributes (If/Loop bodies) are returned as protos only with ``keep_graphs``;
    otherwise they raise :class:`UnsupportedOpError` naming the op (``what``).
    """
    values: dict[str, Any] = {}
    for attr in node.attribute:
        kind = attr.type
        if kind in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            if not keep_graphs:
                raise UnsupportedOpError(
                    f"op {what} ({node.op_type}) has subgraph attribute {attr.name!r}; control flow "
                    "is only supported when it folds to constants"
                )
            values[attr.name] = onnx.helper.get_attribute_value(attr)
        elif kind == onnx.AttributeProto.TENSOR:
            values[attr.name] = _tensor(attr.t, f"attribute {attr.name!r} of op {what}")
        elif kind == onnx.AttributeProto.TENSORS:
            values[attr.name] = tuple(_tensor(t, f"attribute {attr.name!r} of op {what}") for t in attr.tensors)
        elif kind in (onnx.AttributeProto.STRING, onnx.AttributeProto.STRINGS):
            values[attr.name] = _strings(onnx.helper.get_attribute_value(attr))
        elif kind in (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS):
            values[attr.name] = tuple(onnx.helper.get_attribute_value(attr))
        elif kind in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT):
            values[attr.name] = onnx.helper.get_attribute_value(attr)
        else:
            kind_name = onnx.AttributeProto.AttributeType.Name(kind)
            raise UnsupportedOpError(f"op {what} ({node.op_type}) has attribute {attr.name!r} of unsupported kind {kind_name}")
    return values


def _strings(value: bytes | Sequence[bytes]) -> str | bytes | tuple[str | bytes, ...]:
    def one(b: bytes) -> str | bytes:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b

    return one(value) if isinstance(value, bytes) else tuple(one(b) for b in value)


def _tensor(tensor: onnx.TensorProto, what: str) -> np.ndarray:
    np_dtype(tensor.data_type, what)
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{what}: tensor data cannot be read ({exc})") from exc


def initializer_array(tensor: onnx.TensorProto, what: str, base_dir: Path | None = None) -> np.ndarray:
    """An initializer's value, loading external data from ``base_dir`` when it has any."""
    if uses_external_data(tensor):
        if base_dir is None:
            raise ModelLoadError(
                f"{what} keeps its data in an external file, but the model was given in memory; "
                "load it with onnx.load(path) (external data loaded) or pass the file's path"
            )
        location = ExternalDataInfo(tensor).location
        try:
            return numpy_helper.to_array(tensor, base_dir=str(base_dir))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{what}: external data file {location!r} cannot be read ({exc})") from exc
    return _tensor(tensor, what)


def opset_versions(model: onnx.ModelProto) -> Mapping[str, int]:
    """Imported opset version per domain, ``ai.onnx`` spelled ``""``."""
    return {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}


# ---------------------------------------------------------------- writing back
_ELEM_TYPES = {name: code for code, name in _DTYPES.items()}


def ops_model(ops: Sequence[Any], inputs: Sequence[tuple[str, str, tuple[int, ...]]],
              outputs: Sequence[tuple[str, str, tuple[int, ...]]], initializers: Mapping[str, np.ndarray],
              opsets: Mapping[str, int], what: str) -> bytes:
    """A serialized ONNX model of ``ops`` (IR :class:`~cosched.ir.graph.Op` values, in order).

    ``inputs`` and ``outputs`` are ``(name, dtype, shape)``; ``initializers`` hold every other
    value the ops read. Names are the graph's own. Raises :class:`UnsupportedOpError` naming
    ``what`` for what cannot be written: a subgraph attribute, an unknown dtype.
    """
    nodes = []
    for op in ops:
        attrs = {}
        for key, value in op.attrs.items():
            if isinstance(value, onnx.GraphProto) or (isinstance(value, (tuple, list)) and value
                                                       and isinstance(value[0], onnx.GraphProto)):
                raise UnsupportedOpError(f"{what}: op {op.name!r} ({op.op_type}) has subgraph attribute {key!r}")
            if isinstance(value, np.ndarray):
                value = numpy_helper.from_array(value)
            elif isinstance(value, tuple) and value and isinstance(value[0], np.ndarray):
                value = [numpy_helper.from_array(v) for v in value]
            elif isinstance(value, tuple) and not value:
                continue  # an empty list has no attribute type; ONNX reads it as absent
            attrs[key] = value
        nodes.append(onnx.helper.make_node(op.op_type, list(op.inputs), list(op.outputs), name=op.name,
                                           domain=op.domain, **attrs))

    def info(name: str, dtype: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
        if dtype not in _ELEM_TYPES:
            raise UnsupportedOpError(f"{what}: tensor {name!r} has dtype {dtype}, which cannot be written to ONNX")
        return onnx.helper.make_tensor_value_info(name, _ELEM_TYPES[dtype], list(shape))

    graph = onnx.helper.make_graph(
        nodes, what, [info(*i) for i in inputs], [info(*o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in initializers.items()],
    )
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = min(model.ir_version, 10)  # onnxruntime 1.20 reads IR version 10
    return model.SerializeToString()

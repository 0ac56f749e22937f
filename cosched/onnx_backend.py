"""cosched as an ONNX backend (``onnx.backend.base.Backend``), for ONNX's conformance tests.

``prepare(model)`` checks every node against :mod:`cosched.ops` (one
:class:`~cosched.errors.UnsupportedOpError` lists every unsupported op before anything runs)
and returns a :class:`CoschedRep` whose ``run(inputs)`` interprets the graph node by node on
CPU torch tensors: initializers and graph inputs seed the environment, each node's inputs are
looked up by name and its outputs stored, and the graph outputs come back as numpy arrays.

Like the importer, this module is a boundary to ONNX protobuf: it alone here reads
``ModelProto``/``NodeProto`` and turns attributes into the plain Python values
(:class:`~cosched.ir.graph.Op` convention: str, int, float, lists, numpy arrays) that
implementations see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from cosched.errors import InputError, RuntimeFailure, UnsupportedOpError
from cosched.execution.kernels import Kernel, prepare_kernels
from cosched.ir.graph import Op, frozen_mapping
from cosched.ir.onnx_io import attr_values
from cosched.ops.registry import MAX_OPSET

__all__ = ["CoschedBackend", "CoschedRep", "is_compatible", "prepare", "run_model", "run_node", "supports_device"]

_ONNX_DOMAINS = ("", "ai.onnx")


def attribute_values(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as the plain Python values :class:`~cosched.ir.graph.Op` carries
    (the importer's conversion, so both paths hand implementations the same values)."""
    return attr_values(node, repr(node.name or node.op_type))


def to_torch(array: Any, what: str) -> torch.Tensor:
    """A numpy array (or scalar) as a CPU tensor; UnsupportedOpError for dtypes torch lacks."""
    arr = np.asarray(array)
    try:
        return torch.from_numpy(np.array(arr, copy=True))
    except TypeError as exc:
        raise UnsupportedOpError(
            f"tensor {what!r}: dtype {arr.dtype} is not supported by cosched"
        ) from exc


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    opsets = {imp.domain: int(imp.version) for imp in model.opset_import}
    if "ai.onnx" in opsets:
        opsets.setdefault("", opsets["ai.onnx"])
    return opsets


def _kernels(graph: onnx.GraphProto, opsets: Mapping[str, int]) -> list[Kernel]:
    """Bind every node through the executors' kernel path: one UnsupportedOpError names every
    node that cannot run. Nodes become :class:`Op` values of a tenant named after the graph."""
    ops = []
    for i, node in enumerate(graph.node):
        domain = "" if node.domain in _ONNX_DOMAINS else node.domain
        ops.append(Op(
            name=node.name or f"#{i}", op_type=node.op_type, tenant=graph.name or "graph",
            inputs=tuple(node.input), outputs=tuple(node.output),
            attrs=frozen_mapping(attribute_values(node)), domain=domain,
            opset=opsets.get(domain, 0),
        ))
    return prepare_kernels(ops)


def _check_defined(graph: onnx.GraphProto, kernels: Sequence[Kernel], available: set[str]) -> None:
    """Every node input must be a graph input, an initializer or an earlier node's output."""
    for kernel in kernels:
        for name in kernel.op.inputs:
            if name and name not in available:
                raise InputError(
                    f"graph {graph.name!r}: node {kernel.op.name!r} ({kernel.op.op_type}) reads "
                    f"{name!r}, which is neither a graph input, an initializer nor an earlier output"
                )
        available.update(n for n in kernel.op.outputs if n)


class CoschedRep(BackendRep):
    """A prepared model: runs its nodes in order through the op registry."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self._kernels = _kernels(graph, _opsets(model))
        self._weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        _check_defined(graph, self._kernels, {i.name for i in graph.input} | set(self._weights))
        self.input_names = tuple(i.name for i in graph.input if i.name not in self._weights)
        self.output_names = tuple(o.name for o in graph.output)
        self._graph_name = graph.name

    def _environment(self, inputs: Any) -> dict[str, torch.Tensor]:
        if isinstance(inputs, Mapping):
            given = dict(inputs)
        else:
            seq = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(seq) > len(self.input_names):
                raise InputError(
                    f"graph {self._graph_name!r}: expected at most {len(self.input_names)} "
                    f"inputs {list(self.input_names)}, but got {len(seq)}"
                )
            given = dict(zip(self.input_names, seq, strict=False))
        extra = sorted(set(given) - set(self.input_names) - set(self._weights))
        if extra:
            raise InputError(
                f"graph {self._graph_name!r}: unexpected inputs {extra}; "
                f"expected {list(self.input_names)}"
            )
        env = {name: to_torch(value, name) for name, value in self._weights.items()}
        env.update({name: to_torch(value, name) for name, value in given.items()})
        return env

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        env = self._environment(inputs)
        for kernel in self._kernels:
            kernel(env)
        return tuple(_fetch_output(env, name, self._graph_name) for name in self.output_names)


def _fetch_output(env: Mapping[str, torch.Tensor], name: str, graph: str) -> np.ndarray:
    if name not in env:
        raise RuntimeFailure(f"graph {graph!r}: output {name!r} was never produced")
    return env[name].detach().cpu().numpy()


class CoschedBackend(Backend):
    """The ``onnx.backend.base.Backend`` entry points (CPU only)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        try:
            _kernels(model.graph, _opsets(model))
        except UnsupportedOpError:
            return False
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> CoschedRep:
        if not cls.supports_device(device):
            raise UnsupportedOpError(f"device {device!r} is not supported by the cosched backend; use CPU")
        return CoschedRep(model)

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[Any, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, ...]:
        """Run one node at ``opset_version`` (default: the newest opset cosched claims)."""
        domain = "" if node.domain in _ONNX_DOMAINS else node.domain
        opset = int(kwargs.get("opset_version", MAX_OPSET))
        (kernel,) = _kernels(_single_node_graph(node), {domain: opset})
        args = [to_torch(v, n) if n else None for n, v in zip(node.input, inputs, strict=False)]
        result = kernel.fn(kernel.ctx, *args)
        outs = result if isinstance(result, tuple) else (result,)
        return tuple(o.detach().cpu().numpy() for o in outs if o is not None)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


def _single_node_graph(node: onnx.NodeProto) -> onnx.GraphProto:
    return onnx.helper.make_graph([node], node.name or node.op_type, [], [])


prepare = CoschedBackend.prepare
run_model = CoschedBackend.run_model
run_node = CoschedBackend.run_node
supports_device = CoschedBackend.supports_device
is_compatible = CoschedBackend.is_compatible

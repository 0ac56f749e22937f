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
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from cosched.errors import CoschedError, InputError, RuntimeFailure, UnsupportedOpError
from cosched.ops.registry import MAX_OPSET, OpContext, OpImpl, is_supported, lookup

__all__ = ["CoschedBackend", "CoschedRep", "prepare", "run_model", "run_node", "supports_device"]

_ONNX_DOMAINS = ("", "ai.onnx")


def attribute_values(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as plain Python values (strings decoded, tensors as numpy)."""
    values: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if attr.type == onnx.AttributeProto.STRING:
            value = value.decode("utf-8")
        elif attr.type == onnx.AttributeProto.STRINGS:
            value = [v.decode("utf-8") for v in value]
        elif attr.type == onnx.AttributeProto.TENSOR:
            value = numpy_helper.to_array(value)
        elif attr.type == onnx.AttributeProto.TENSORS:
            value = [numpy_helper.to_array(v) for v in value]
        values[attr.name] = value
    return values


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


@dataclass(frozen=True)
class _Step:
    """One node bound to its implementation."""

    fn: OpImpl
    ctx: OpContext
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _plan(graph: onnx.GraphProto, opsets: Mapping[str, int]) -> list[_Step]:
    """Bind every node; raise one UnsupportedOpError naming every node that cannot run."""
    missing: dict[str, list[str]] = {}
    steps: list[_Step] = []
    for i, node in enumerate(graph.node):
        domain = "" if node.domain in _ONNX_DOMAINS else node.domain
        opset = opsets.get(domain)
        label = node.name or f"#{i}"
        if opset is None or not is_supported(node.op_type, opset, domain):
            qualified = f"{domain}.{node.op_type}" if domain else node.op_type
            missing.setdefault(f"{qualified} (opset {opset})", []).append(repr(label))
            continue
        ctx = OpContext(node.op_type, opset, attribute_values(node), len(node.output), label)
        steps.append(
            _Step(lookup(node.op_type, opset, domain), ctx, tuple(node.input), tuple(node.output))
        )
    if missing:
        parts = [
            f"{op}: nodes {', '.join(labels[:5])}"
            + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
            for op, labels in sorted(missing.items())
        ]
        count = sum(len(v) for v in missing.values())
        raise UnsupportedOpError(
            f"graph {graph.name!r}: {count} node(s) use ops cosched.ops does not support: "
            + "; ".join(parts)
        )
    return steps


class CoschedRep(BackendRep):
    """A prepared model: runs its nodes in order through the op registry."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self._steps = _plan(graph, _opsets(model))
        self._weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
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
        for step in self._steps:
            args = [_fetch(env, name, step) if name else None for name in step.inputs]
            try:
                result = step.fn(step.ctx, *args)
            except CoschedError:
                raise
            except Exception as exc:
                raise RuntimeFailure(
                    f"node {step.ctx.name!r} ({step.ctx.op_type}, opset {step.ctx.opset}) "
                    f"failed: {type(exc).__name__}: {exc}"
                ) from exc
            outs = result if isinstance(result, tuple) else (result,)
            for name, value in zip(step.outputs, outs, strict=False):
                if name and value is not None:
                    env[name] = value
        return tuple(_fetch_output(env, name, self._graph_name) for name in self.output_names)


def _fetch(env: Mapping[str, torch.Tensor], name: str, step: _Step) -> torch.Tensor:
    if name not in env:
        raise InputError(
            f"node {step.ctx.name!r} ({step.ctx.op_type}): input tensor {name!r} is neither a "
            "graph input, an initializer nor an earlier node's output"
        )
    return env[name]


def _fetch_output(env: Mapping[str, torch.Tensor], name: str, graph: str) -> np.ndarray:
    if name not in env:
        raise RuntimeFailure(f"graph {graph!r}: output {name!r} was never produced")
    return env[name].detach().cpu().numpy()


class CoschedBackend(Backend):
    """The ``onnx.backend.base.Backend`` entry points (CPU only)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        try:
            _plan(model.graph, _opsets(model))
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
        (step,) = _plan(_single_node_graph(node), {domain: opset})
        args = [to_torch(v, n) if n else None for n, v in zip(node.input, inputs, strict=False)]
        result = step.fn(step.ctx, *args)
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

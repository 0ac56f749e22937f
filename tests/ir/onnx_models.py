"""Tiny inline ONNX models for the importer tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["I64", "F", "make_model", "mlp", "tensor"]

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def tensor(name: str, elem: int, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[np.ndarray | tuple[str, np.ndarray]] | dict[str, np.ndarray] = (),
    *,
    name: str = "g",
    opset: int = 18,
    **kwargs: Any,
) -> onnx.ModelProto:
    """A model from nodes; ``initializers`` maps names to arrays."""
    items = initializers.items() if isinstance(initializers, dict) else initializers
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in items]
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)


def mlp(name: str = "mlp", batch: int | str = "N") -> onnx.ModelProto:
    """x[batch, 4] -> MatMul(w[4, 3]) -> Add(b[3]) -> Relu -> y[batch, 3]."""
    rng = np.random.default_rng(0)
    return make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Add", ["h", "b"], ["z"], name="add"),
            helper.make_node("Relu", ["z"], ["y"], name="relu"),
        ],
        [tensor("x", F, [batch, 4])],
        [tensor("y", F, [batch, 3])],
        {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.arange(3, dtype=np.float32)},
        name=name,
    )

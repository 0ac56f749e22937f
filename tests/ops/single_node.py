"""Run one ONNX node through onnxruntime and through cosched.ops, for side-by-side tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper

from cosched.ops import run_op

OPSET = 18


def run_both(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    n_out: int = 1,
    opset: int = OPSET,
    **attrs: Any,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(onnxruntime outputs, cosched outputs) of one ``op_type`` node on ``inputs``."""
    names = [f"x{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
        for n, x in zip(names, inputs, strict=True)
        if x is not None
    ]
    graph = helper.make_graph([node], "single", graph_inputs, [helper.make_value_info(o, onnx.TypeProto()) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: x for n, x in zip(names, inputs, strict=True) if x is not None}
    expected = session.run(None, feeds)
    tensors = [None if x is None else torch.from_numpy(np.array(x)) for x in inputs]
    got = run_op(op_type, opset, tensors, attrs, n_out)
    return expected, [t.numpy() for t in got if t is not None]


def assert_matches_ort(
    op_type: str, inputs: Sequence[np.ndarray | None], n_out: int = 1, opset: int = OPSET, **attrs: Any
) -> list[np.ndarray]:
    """Assert cosched equals onnxruntime (shape, dtype, values); return cosched's outputs."""
    expected, got = run_both(op_type, inputs, n_out, opset, **attrs)
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, g.dtype, e.shape, e.dtype)
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
    return got

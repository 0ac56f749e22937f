"""ONNX's own node test cases, run through cosched as an ONNX backend.

``onnx.backend.test.BackendTest(cosched.onnx_backend, __name__)`` generates one test per node case
(``load_node_model_tests()``, ~1,900 generated in memory). A case runs iff the registry
claims it, decided from the case's model alone (:func:`unclaimed_reason`):

* every node's (domain, op_type, opset) is in :func:`cosched.ops.supported_ops`
  (``_expanded`` cases included: their nodes are checked one by one);
* every tensor dtype the case touches (graph inputs, outputs, initializers, value_info,
  tensor attributes, Cast-like target dtypes) is one cosched implements
  (``cosched.ops.implementations.common.ONNX_DTYPES``): bfloat16, float8, 4/2-bit, string,
  complex, and sequence/optional/map values are not claimed;
* it does not ask for training-mode semantics (BatchNormalization ``training_mode=1`` or its
  running-statistics outputs, Dropout with a ``training_mode`` input): cosched runs
  inference only.

No case is excluded by name. Every included case must pass with the case's own rtol/atol.
Cases are generated at the newest opset of their op, up to the newest the installed onnx
defines; :func:`test_claims_reach_every_opset_onnx_defines` fails when the registry stops short
of that opset, so a newer onnx cannot shrink the run unnoticed.
The counts (included, passed, per op) are printed at the end of the pytest run by
``tests/ops/conftest.py``.
"""

from __future__ import annotations

import itertools
import re
import unittest
import warnings
from collections.abc import Iterator

import onnx
import onnx.backend.test

import cosched.onnx_backend
from cosched.ops import is_supported, supported_ops
from cosched.ops.implementations.common import ONNX_DTYPES

_DTYPE_ATTRS = {"to", "dtype", "output_dtype"}
_NOT_TENSOR = ("sequence_type", "optional_type", "map_type", "sparse_tensor_type")


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs its nodes carry (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _nodes(sub)


def _value_dtype(value: onnx.ValueInfoProto) -> str | None:
    """Why a graph value's type is unclaimed, or None if it is a claimed tensor dtype."""
    kind = value.type.WhichOneof("value")
    if kind in _NOT_TENSOR:
        return f"{value.name!r} is a {kind.removesuffix('_type')}"
    if kind == "tensor_type" and value.type.tensor_type.elem_type not in ONNX_DTYPES:
        return f"{value.name!r} has dtype {onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)}"
    return None


def _node_reason(node: onnx.NodeProto, opsets: dict[str, int]) -> str | None:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    opset = opsets.get(domain)
    if opset is None or not is_supported(node.op_type, opset, domain):
        return f"op {node.op_type} at opset {opset}"
    for attr in node.attribute:
        if attr.name in _DTYPE_ATTRS and attr.type == onnx.AttributeProto.INT and attr.i not in ONNX_DTYPES:
            return f"dtype {onnx.TensorProto.DataType.Name(attr.i)} ({node.op_type}.{attr.name})"
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type not in ONNX_DTYPES:
            return f"dtype {onnx.TensorProto.DataType.Name(attr.t.data_type)} ({node.op_type}.{attr.name})"
    if node.op_type == "BatchNormalization":
        training = any(a.name == "training_mode" and a.i for a in node.attribute)
        if training or len([o for o in node.output if o]) > 1:
            return "training mode (BatchNormalization)"
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        return "training mode (Dropout training_mode input)"
    return None


def unclaimed_reason(model: onnx.ModelProto) -> str | None:
    """Why cosched does not claim this case (category: detail), or None when it does."""
    opsets = {imp.domain: int(imp.version) for imp in model.opset_import}
    opsets.setdefault("", opsets.get("ai.onnx", 0))
    graph = model.graph
    for node in _nodes(graph):
        reason = _node_reason(node, opsets)
        if reason:
            category = "op/opset" if reason.startswith("op ") else (
                "training mode" if reason.startswith("training") else "dtype"
            )
            return f"{category}: {reason}"
    for value in (*graph.input, *graph.output, *graph.value_info):
        reason = _value_dtype(value)
        if reason:
            return f"dtype: {reason}"
    for init in graph.initializer:
        if init.data_type not in ONNX_DTYPES:
            return f"dtype: initializer {init.name!r} is {onnx.TensorProto.DataType.Name(init.data_type)}"
    return None


def _load_cases() -> list[onnx.backend.test.case.test_case.TestCase]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' own numpy overflow warnings
        return list(onnx.backend.test.loader.load_node_model_tests())


NODE_CASES = _load_cases()
#: case name -> None (runs) or the reason it is not claimed.
CASE_REASONS: dict[str, str | None] = {c.name: unclaimed_reason(c.model) for c in NODE_CASES}
#: case name -> the op types of its (top-level) nodes, for per-op tallies.
CASE_OPS: dict[str, tuple[str, ...]] = {
    c.name: tuple(sorted({n.op_type for n in c.model.graph.node})) for c in NODE_CASES
}
INCLUDED = sorted(name for name, reason in CASE_REASONS.items() if reason is None)

_backend_test = onnx.backend.test.BackendTest(cosched.onnx_backend, __name__)
for _name in INCLUDED:
    _backend_test.include(f"^{re.escape(_name)}_cpu$")
_generated = _backend_test.test_cases["OnnxBackendNodeModelTest"]


class TestOnnxNodeConformance(unittest.TestCase):
    """Only the included cases of BackendTest's generated node tests, CPU device."""


for _name in INCLUDED:
    setattr(TestOnnxNodeConformance, f"{_name}_cpu", getattr(_generated, f"{_name}_cpu"))
del _generated  # pytest would otherwise collect BackendTest's class (every case) as well


def test_claims_reach_every_opset_onnx_defines() -> None:
    """Every op type the registry claims is claimed without gaps up to the newest opset of the
    installed onnx, so its node cases run at whatever opset onnx generates them for."""
    newest = onnx.defs.onnx_opset_version()
    spans: dict[str, list[tuple[int, int]]] = {}
    for op, span in supported_ops():
        if "." not in op:  # ai.onnx only; other domains version separately
            spans.setdefault(op, []).append(span)
    short = {
        op: ranges
        for op, ranges in sorted(spans.items())
        if ranges[-1][1] < newest or any(b[0] != a[1] + 1 for a, b in itertools.pairwise(ranges))
    }
    assert not short, (
        f"onnx {onnx.__version__} defines opsets up to {newest}, but these op types are not claimed "
        f"up to it without gaps: {short}. Check each one's newer versions in onnx's Changelog, "
        "register an implementation where the semantics changed, and raise the claims "
        "(cosched.ops.registry.MAX_OPSET)"
    )

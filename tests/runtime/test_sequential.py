"""SequentialExecutor: values, input validation, unsupported ops reported up front, freeing."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import cosched.execution.kernels as kernels_module
import cosched.ir
from cosched.errors import InputError, UnsupportedOpError
from cosched.ir.graph import Graph, Op, TenantInfo, TensorInfo, frozen_mapping, qualify
from cosched.runtime import SequentialExecutor


class _Tiny:
    """Builds IR graphs inline: tenants with inputs, constants and single-output ops."""

    def __init__(self) -> None:
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        self.inputs: dict[str, list[tuple[str, str]]] = {}
        self.outputs: dict[str, list[tuple[str, str]]] = {}

    def input(self, tenant: str, name: str, shape: tuple[int, ...], dtype: str = "float32") -> str:
        full = qualify(tenant, name)
        self.tensors[full] = TensorInfo(full, shape, dtype, tenant, "input")
        self.inputs.setdefault(tenant, []).append((name, full))
        return full

    def constant(self, tenant: str, name: str, value: np.ndarray) -> str:
        full = qualify(tenant, name)
        self.tensors[full] = TensorInfo(full, value.shape, str(value.dtype), tenant, "constant")
        self.constants[full] = value
        return full

    def op(self, tenant: str, op_type: str, inputs: list[str], shape: tuple[int, ...], name: str,
           dtype: str = "float32", domain: str = "", **attrs: Any) -> str:
        out = qualify(tenant, f"{name}_out")
        self.tensors[out] = TensorInfo(out, shape, dtype, tenant, "activation")
        self.ops.append(Op(qualify(tenant, name), op_type, tenant, tuple(inputs), (out,),
                           frozen_mapping(attrs), domain=domain, opset=18))
        return out

    def output(self, tenant: str, name: str, tensor: str) -> None:
        self.outputs.setdefault(tenant, []).append((name, tensor))

    def build(self) -> Graph:
        tenants = tuple(
            TenantInfo(t, None, "0" * 64, frozen_mapping({"": 18}), tuple(ins), tuple(self.outputs.get(t, ())))
            for t, ins in self.inputs.items()
        )
        return Graph(tenants=tenants, ops=tuple(self.ops), tensors=frozen_mapping(self.tensors),
                     constants=frozen_mapping(self.constants)).verify()


W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def _two_tenants() -> Graph:
    """Tenant ``mlp``: relu(x @ w) + 1; tenant ``emb``: table[ids] summed over axis 1."""
    b = _Tiny()
    x = b.input("mlp", "x", (2, 4))
    mm = b.op("mlp", "MatMul", [x, b.constant("mlp", "w", W)], (2, 3), "mm")
    relu = b.op("mlp", "Relu", [mm], (2, 3), "relu")
    b.output("mlp", "y", b.op("mlp", "Add", [relu, b.constant("mlp", "one", np.array(1.0, np.float32))],
                              (2, 3), "add"))
    ids = b.input("emb", "ids", (2, 5), "int64")
    table = b.constant("emb", "table", np.arange(21, dtype=np.float32).reshape(7, 3))
    rows = b.op("emb", "Gather", [table, ids], (2, 5, 3), "gather")
    axes = b.constant("emb", "axes", np.array([1], dtype=np.int64))
    b.output("emb", "pooled", b.op("emb", "ReduceSum", [rows, axes], (2, 3), "sum", keepdims=0))
    return b.build()


def _feeds() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return {
        "mlp": {"x": rng.standard_normal((2, 4)).astype(np.float32)},
        "emb": {"ids": rng.integers(0, 7, size=(2, 5)).astype(np.int64)},
    }


def test_outputs_are_keyed_by_tenant_and_own_names_with_right_values() -> None:
    feeds = _feeds()
    out = SequentialExecutor(_two_tenants()).run(feeds)
    assert {t: sorted(o) for t, o in out.items()} == {"mlp": ["y"], "emb": ["pooled"]}
    np.testing.assert_allclose(out["mlp"]["y"], np.maximum(feeds["mlp"]["x"] @ W, 0) + 1, rtol=1e-6)
    table = np.arange(21, dtype=np.float32).reshape(7, 3)
    np.testing.assert_array_equal(out["emb"]["pooled"], table[feeds["emb"]["ids"]].sum(axis=1))


def test_runs_are_repeatable_and_accept_torch_tensors() -> None:
    ex = SequentialExecutor(_two_tenants())
    feeds = _feeds()
    first = ex.run(feeds)
    as_torch = {t: {k: torch.from_numpy(v) for k, v in f.items()} for t, f in feeds.items()}
    second = ex.run(as_torch)
    for tenant in first:
        for name in first[tenant]:
            np.testing.assert_array_equal(first[tenant][name], second[tenant][name])


def _bad(feeds: dict[str, dict[str, Any]], tenant: str, tensor: str, *words: str) -> None:
    with pytest.raises(InputError) as info:
        SequentialExecutor(_two_tenants()).run(feeds)
    message = str(info.value)
    for word in (tenant, tensor, *words):
        assert word in message, message


def test_missing_input_names_tenant_and_tensor() -> None:
    feeds = _feeds()
    del feeds["emb"]["ids"]
    _bad(feeds, "'emb'", "ids", "missing")


def test_missing_tenant_names_its_inputs() -> None:
    feeds = _feeds()
    del feeds["mlp"]
    _bad(feeds, "'mlp'", "x", "missing")


def test_extra_input_names_tenant_and_tensor() -> None:
    feeds = _feeds()
    feeds["mlp"]["mask"] = np.ones((2, 4), np.float32)
    _bad(feeds, "'mlp'", "mask", "unknown")


def test_wrong_shape_names_tenant_tensor_and_both_shapes() -> None:
    feeds = _feeds()
    feeds["mlp"]["x"] = np.zeros((3, 4), np.float32)
    _bad(feeds, "'mlp'", "'x'", "[2, 4]", "[3, 4]")


def test_wrong_dtype_names_tenant_tensor_and_both_dtypes() -> None:
    feeds = _feeds()
    feeds["emb"]["ids"] = feeds["emb"]["ids"].astype(np.int32)
    _bad(feeds, "'emb'", "'ids'", "int64", "int32")


def test_unknown_tenant_is_named() -> None:
    feeds = _feeds()
    feeds["vision"] = {"image": np.zeros((1, 3), np.float32)}
    _bad(feeds, "vision", "", "unknown tenant")


def _with_unsupported() -> Graph:
    """Supported ops first, then two unknown custom ops and an unknown default-domain op."""
    b = _Tiny()
    x = b.input("t", "x", (2, 3))
    relu = b.op("t", "Relu", [x], (2, 3), "relu")
    first = b.op("t", "Frobnicate", [relu], (2, 3), "frob_a", domain="com.example")
    second = b.op("t", "Frobnicate", [first], (2, 3), "frob_b", domain="com.example")
    b.output("t", "y", b.op("t", "Wibble", [second], (2, 3), "wibble"))
    return b.build()


def test_unsupported_ops_fail_once_listing_all_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_lookup = kernels_module.lookup

    def recording_lookup(op_type: str, opset: int, domain: str = "") -> Any:
        fn = real_lookup(op_type, opset, domain)

        def wrapped(*args: Any) -> Any:
            calls.append(op_type)
            return fn(*args)
        return wrapped

    monkeypatch.setattr(kernels_module, "lookup", recording_lookup)
    with pytest.raises(UnsupportedOpError) as info:
        SequentialExecutor(_with_unsupported())
    message = str(info.value)
    assert "3 op(s)" in message, message
    for part in ("com.example.Frobnicate", "t/frob_a", "t/frob_b", "Wibble", "t/wibble"):
        assert part in message, message
    assert "relu" not in message
    assert calls == []


def test_unsupported_onnx_ops_from_an_imported_model_are_listed_together() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Det", ["r"], ["d"], name="det_one"),
        helper.make_node("SpaceToDepth", ["img"], ["s2d"], name="space_to_depth", blocksize=2),
    ]
    graph = helper.make_graph(
        nodes, "two_unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("s2d", TensorProto.FLOAT, [1, 16, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    g = cosched.ir.load_models([model], names=["m"])
    with pytest.raises(UnsupportedOpError) as info:
        SequentialExecutor(g)
    message = str(info.value)
    for part in ("2 op(s)", "Det (opset 18)", "det_one", "SpaceToDepth (opset 18)", "space_to_depth"):
        assert part in message, message


def test_intermediates_are_freed_after_their_last_use() -> None:
    """A chain of 29 ops keeps at most the value just read and the one just written."""
    b = _Tiny()
    value = b.input("t", "x", (4,))
    for i in range(29):
        value = b.op("t", "Neg", [value], (4,), f"op{i}")
    b.output("t", "y", value)
    ex = SequentialExecutor(b.build())
    sizes: list[int] = []

    def measuring(kernel: kernels_module.Kernel) -> Any:
        def call(env: MutableMapping[str, torch.Tensor]) -> None:
            kernel(env)
            sizes.append(len(env))
        return call

    ex.kernels = [measuring(k) for k in ex.kernels]  # type: ignore[misc]
    x = np.array([-1.0, 2.0, -3.0, 4.0], np.float32)
    out = ex.run({"t": {"x": x}})
    np.testing.assert_array_equal(out["t"]["y"], -x)
    assert len(sizes) == 29
    assert max(sizes) <= 2, sizes

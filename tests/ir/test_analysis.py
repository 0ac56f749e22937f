"""Per-op cost analysis, totals, critical path and the graph summary, on inline graphs."""

from __future__ import annotations

import pytest
from tiny_graphs import GraphBuilder

from cosched.errors import GraphError, ShapeError
from cosched.ir import analyse, critical_path, format_summary, fuse, summarize
from cosched.ir.analysis import cost_by_tenant, op_cost, total_cost
from cosched.ir.graph import OpCost

F32 = 4


def _single_op_cost(build) -> OpCost:  # type: ignore[no-untyped-def]
    b = GraphBuilder()
    out = build(b)
    graph = analyse(b.build({"m": [out]}))
    (op,) = graph.ops
    assert op.cost == op_cost(graph, op)
    return op.cost


def test_conv_with_stride_padding_groups_and_bias() -> None:
    # X (1, 4, 8, 8), W (6, 4/2, 3, 3), stride 2, pad 1 -> Y (1, 6, 4, 4)
    def build(b: GraphBuilder) -> str:
        x = b.input("m", "x", (1, 4, 8, 8))
        w = b.weight("m", "w", (6, 2, 3, 3))
        bias = b.weight("m", "b", (6,))
        return b.op("m", "Conv", [x, w, bias], (1, 6, 4, 4), group=2, strides=[2, 2], pads=[1, 1, 1, 1])

    cost = _single_op_cost(build)
    assert cost.flops == 2 * 1 * 6 * 4 * 4 * 2 * 3 * 3 + 1 * 6 * 4 * 4  # 3456 + 96
    assert cost.bytes_read == (4 * 8 * 8 + 6 * 2 * 9 + 6) * F32
    assert cost.bytes_written == 6 * 4 * 4 * F32
    assert cost.param_bytes == (6 * 2 * 9 + 6) * F32
    assert cost.intensity == pytest.approx(cost.flops / (cost.bytes_read + cost.bytes_written))


def test_conv_without_bias_and_conv_transpose() -> None:
    def conv(b: GraphBuilder) -> str:
        x = b.input("m", "x", (2, 3, 5, 5))
        w = b.weight("m", "w", (8, 3, 1, 1))
        return b.op("m", "Conv", [x, w], (2, 8, 5, 5))

    assert _single_op_cost(conv).flops == 2 * 2 * 8 * 5 * 5 * 3

    # every input element is multiplied into a (Cout/group, kH, kW) window of the output
    def deconv(b: GraphBuilder) -> str:
        x = b.input("m", "x", (1, 4, 5, 5))
        w = b.weight("m", "w", (4, 3, 3, 3))
        return b.op("m", "ConvTranspose", [x, w], (1, 3, 11, 11), strides=[2, 2])

    assert _single_op_cost(deconv).flops == 2 * (4 * 5 * 5) * (3 * 3 * 3)


@pytest.mark.parametrize(
    ("trans_a", "alpha", "beta", "with_c", "expected"),
    [
        (0, 1.0, 1.0, True, 2 * 8 * 32 * 16 + 8 * 32),
        (1, 1.0, 1.0, False, 2 * 8 * 32 * 16),
        (0, 0.5, 2.0, True, 2 * 8 * 32 * 16 + 3 * 8 * 32),
    ],
)
def test_gemm(trans_a: int, alpha: float, beta: float, with_c: bool, expected: int) -> None:
    def build(b: GraphBuilder) -> str:
        a = b.input("m", "a", (16, 8) if trans_a else (8, 16))
        w = b.weight("m", "w", (32, 16))
        ins = [a, w] + ([b.weight("m", "c", (32,))] if with_c else [])
        return b.op("m", "Gemm", ins, (8, 32), transA=trans_a, transB=1, alpha=alpha, beta=beta)

    cost = _single_op_cost(build)
    assert cost.flops == expected
    assert cost.param_bytes == (32 * 16 + (32 if with_c else 0)) * F32


def test_matmul_batched_broadcast_and_vector() -> None:
    def batched(b: GraphBuilder) -> str:
        x = b.input("m", "x", (2, 3, 5, 7))
        w = b.weight("m", "w", (3, 7, 4))
        return b.op("m", "MatMul", [x, w], (2, 3, 5, 4))

    cost = _single_op_cost(batched)
    assert cost.flops == 2 * (2 * 3) * 5 * 4 * 7
    assert cost.param_bytes == 3 * 7 * 4 * F32

    def vector(b: GraphBuilder) -> str:
        x = b.input("m", "x", (7,))
        y = b.input("m", "y", (7, 4))
        return b.op("m", "MatMul", [x, y], (4,))

    cost = _single_op_cost(vector)
    assert cost.flops == 2 * 4 * 7
    assert cost.param_bytes == 0


@pytest.mark.parametrize(
    ("equation", "shapes", "out", "expected"),
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], (2, 3, 5), 2 * 2 * 3 * 4 * 5),
        ("...ij,...jk", [(2, 3, 4), (2, 4, 5)], (2, 3, 5), 2 * 2 * 3 * 4 * 5),
        ("i,j->ij", [(3,), (4,)], (3, 4), 3 * 4),
        ("ij->i", [(3, 4)], (3,), 3 * 4),
        ("ij->ji", [(3, 4)], (4, 3), 0),
    ],
)
def test_einsum(equation: str, shapes: list[tuple[int, ...]], out: tuple[int, ...], expected: int) -> None:
    def build(b: GraphBuilder) -> str:
        ins = [b.input("m", f"x{k}", s) for k, s in enumerate(shapes)]
        return b.op("m", "Einsum", ins, out, equation=equation)

    assert _single_op_cost(build).flops == expected


def test_pool_elementwise_reduction_and_variadic() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", (1, 2, 8, 8))
    pooled = b.op("m", "MaxPool", [x], (1, 2, 4, 4), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    gap = b.op("m", "GlobalAveragePool", [pooled], (1, 2, 1, 1))
    sig = b.op("m", "Sigmoid", [pooled], (1, 2, 4, 4))
    total = b.op("m", "Sum", [pooled, sig, pooled], (1, 2, 4, 4))
    mean = b.op("m", "ReduceMean", [total], (1, 2, 1, 1))
    graph = analyse(b.build({"m": [gap, mean]}))
    flops = {op.op_type: op.cost.flops for op in graph.ops if op.cost}
    assert flops == {
        "MaxPool": 32 * 9,
        "GlobalAveragePool": 32,
        "Sigmoid": 4 * 32,
        "Sum": 2 * 32,
        "ReduceMean": 32,
    }


def test_views_move_nothing_and_unknown_ops_count_bytes_only() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", (2, 6))
    shape = b.weight("m", "shape", (2,), dtype="int64")
    r = b.op("m", "Reshape", [x, shape], (3, 4))
    t = b.op("m", "Transpose", [r], (4, 3), perm=[1, 0])
    u = b.op("m", "FancyCustomOp", [t], (4, 3))
    h = b.op("m", "Half", [u], (4, 3), dtype="float16")
    graph = analyse(b.build({"m": [h]}))
    costs = {op.op_type: op.cost for op in graph.ops}
    assert costs["Reshape"] == OpCost()
    assert costs["Transpose"] == OpCost(0, 12 * F32, 12 * F32, 0)
    assert costs["FancyCustomOp"] == OpCost(0, 12 * F32, 12 * F32, 0)
    assert costs["Half"] == OpCost(0, 12 * F32, 12 * 2, 0)


def test_op_reading_a_tensor_twice_reads_it_once() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", (10,))
    sq = b.op("m", "Mul", [x, x], (10,))
    cost = analyse(b.build({"m": [sq]})).ops[0].cost
    assert cost == OpCost(10, 10 * F32, 10 * F32, 0)


def test_bad_shapes_raise_shape_error_naming_the_op() -> None:
    b = GraphBuilder()
    a = b.input("m", "a", (2, 3, 4))
    w = b.weight("m", "w", (4, 5))
    y = b.op("m", "Gemm", [a, w], (2, 5), name="my_gemm")
    with pytest.raises(ShapeError, match="my_gemm"):
        analyse(b.build({"m": [y]}))


def _two_tenants() -> GraphBuilder:
    b = GraphBuilder()
    x = b.input("a", "x", (1, 3, 8, 8))
    w = b.weight("a", "w", (4, 3, 1, 1))
    c = b.op("a", "Conv", [x, w], (1, 4, 8, 8), name="conv")
    r = b.op("a", "Relu", [c], (1, 4, 8, 8), name="relu")
    f = b.op("a", "Flatten", [r], (1, 256), name="flat")
    v = b.input("b", "v", (4, 8))
    m = b.weight("b", "m", (8, 2))
    mm = b.op("b", "MatMul", [v, m], (4, 2), name="mm")
    b.outputs = {"a": [f], "b": [mm]}  # type: ignore[attr-defined]
    return b


def test_totals_per_tenant_and_graph() -> None:
    b = _two_tenants()
    graph = analyse(b.build(b.outputs))  # type: ignore[attr-defined]
    per = cost_by_tenant(graph)
    assert list(per) == ["a", "b"]
    assert per["a"].flops == 2 * 4 * 64 * 3 + 4 * 64  # conv (no bias) + relu
    assert per["b"].flops == 2 * 4 * 2 * 8
    assert per["a"].param_bytes == 12 * F32
    assert total_cost(graph) == per["a"] + per["b"]


def test_totals_need_an_analysed_graph() -> None:
    b = _two_tenants()
    with pytest.raises(GraphError, match=r"a/conv.*analyse"):
        cost_by_tenant(b.build(b.outputs))  # type: ignore[attr-defined]


def _diamond() -> GraphBuilder:
    b = GraphBuilder()
    x = b.input("m", "x", (4,))
    a = b.op("m", "Relu", [x], (4,), name="a")
    left = b.op("m", "Exp", [a], (4,), name="b")
    right = b.op("m", "Log", [a], (4,), name="c")
    d = b.op("m", "Add", [left, right], (4,), name="d")
    b.outputs = {"m": [d]}  # type: ignore[attr-defined]
    return b


def test_critical_path_with_a_weight_function() -> None:
    b = _diamond()
    graph = b.build(b.outputs)  # type: ignore[attr-defined]
    weights = {"m/a": 1.0, "m/b": 5.0, "m/c": 2.0, "m/d": 1.0}
    assert critical_path(graph, lambda op: weights[op.name]) == (7.0, ["m/a", "m/b", "m/d"])
    weights["m/c"] = 9.0
    assert critical_path(graph, lambda op: weights[op.name]) == (11.0, ["m/a", "m/c", "m/d"])


def test_critical_path_by_flops_over_ops_and_tasks() -> None:
    b = _two_tenants()
    graph = analyse(b.build(b.outputs))  # type: ignore[attr-defined]
    conv_relu = 2 * 4 * 64 * 3 + 4 * 64
    assert critical_path(graph, level="op") == (float(conv_relu), ["a/conv", "a/relu", "a/flat"])
    fused = fuse(graph)
    length, names = critical_path(fused)
    assert length == float(conv_relu)
    assert names == ["a/conv+relu+flat"]
    assert critical_path(analyse(GraphBuilder().build({}))) == (0.0, [])


def test_summary_numbers_and_table() -> None:
    b = _two_tenants()
    graph = fuse(b.build(b.outputs))  # type: ignore[attr-defined]
    summary = summarize(graph)  # analyses a copy: the graph has no costs yet
    a, bb = summary.tenants
    assert (a.name, a.ops, a.tasks) == ("a", 3, 1)
    assert (bb.name, bb.ops, bb.tasks) == ("b", 1, 1)
    assert a.flops == 2 * 4 * 64 * 3 + 4 * 64
    assert a.weight_bytes == 12 * F32
    # conv and relu outputs; the flatten output is a view of the relu output
    assert a.activation_bytes == 2 * 256 * F32
    assert bb.activation_bytes == 8 * F32
    assert a.critical_path_flops == a.flops and a.critical_path_nodes == 1
    assert summary.total.ops == 4 and summary.total.tasks == 2
    assert summary.total.flops == a.flops + bb.flops
    assert summary.total.critical_path_flops == a.flops
    assert summary.level == "task"
    assert summary.to_dict()["tenants"][1]["flops"] == bb.flops
    table = format_summary(summary)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["tenant", "ops", "tasks"]
    assert lines[-1].split()[:3] == ["total", "4", "2"]
    assert any(line.startswith("a ") and f"{a.gflops:.3f}" in line for line in lines)


def test_an_embedding_gather_reads_its_rows_not_the_table() -> None:
    """Gather/Slice read from their data input only what they write (plus their indices)."""
    b = GraphBuilder()
    ids = b.input("m", "ids", (2, 3), dtype="int64")
    table = b.weight("m", "table", (1000, 16))
    rows = b.op("m", "Gather", [table, ids], (2, 3, 16))
    graph = analyse(b.build({"m": [rows]}))
    (op,) = graph.ops
    assert op.cost == OpCost(0, 6 * 16 * F32 + 6 * 8, 6 * 16 * F32, 1000 * 16 * F32)


def test_a_slice_reads_what_it_keeps() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", (8, 10))
    starts = b.weight("m", "starts", (1,), dtype="int64")
    ends = b.weight("m", "ends", (1,), dtype="int64")
    s = b.op("m", "Slice", [x, starts, ends], (2, 10))
    (op,) = analyse(b.build({"m": [s]})).ops
    assert op.cost is not None
    assert op.cost.bytes_read == 2 * 10 * F32 + 2 * 8
    assert op.cost.bytes_written == 2 * 10 * F32

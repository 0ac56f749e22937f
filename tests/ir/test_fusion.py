"""Fusion of ops into tasks, on inline graphs, plus every tiny zoo model."""

from __future__ import annotations

import networkx as nx
import pytest
from tiny_graphs import GraphBuilder

from cosched.ir import analyse, fuse, summarize
from cosched.ir.fusion import OpKind, op_kind
from cosched.ir.graph import Graph, Task

X = (1, 8, 4, 4)


def _tasks(graph: Graph) -> list[tuple[str, ...]]:
    """Each task's ops by short name, after checking the invariants fusion promises."""
    graph.verify()
    assert [t.id for t in graph.tasks] == list(range(len(graph.tasks)))
    dag = graph.to_networkx("task")
    assert all(u < v for u, v in dag.edges), "task ids must be a topological order"
    return [tuple(name.split("/", 1)[1] for name in t.ops) for t in graph.tasks]


def _conv(b: GraphBuilder, x: str, name: str, tenant: str = "m") -> str:
    w = b.weight(tenant, f"{name}_w", (8, 8, 3, 3))
    return b.op(tenant, "Conv", [x, w], X, name=name, pads=[1, 1, 1, 1])


def test_conv_batchnorm_relu_is_one_task() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", X)
    c = _conv(b, x, "conv")
    params = [b.weight("m", f"bn_{p}", (8,)) for p in ("scale", "bias", "mean", "var")]
    bn = b.op("m", "BatchNormalization", [c, *params], X, name="bn")
    r = b.op("m", "Relu", [bn], X, name="relu")
    graph = fuse(b.build({"m": [r]}))
    assert _tasks(graph) == [("conv", "bn", "relu")]
    assert graph.tasks[0] == Task(0, "m", ("m/conv", "m/bn", "m/relu"), "m/conv+bn+relu")


def test_matmul_bias_and_exported_gelu_is_one_task() -> None:
    # x @ W + b, then GELU as exporters emit it: 0.5 * (x * (1 + erf(x / sqrt(2))))
    b = GraphBuilder()
    x = b.input("m", "x", (4, 16))
    w = b.weight("m", "w", (16, 32))
    bias = b.weight("m", "b", (32,))
    sqrt2, one, half = (b.weight("m", n, ()) for n in ("sqrt2", "one", "half"))
    mm = b.op("m", "MatMul", [x, w], (4, 32), name="mm")
    h = b.op("m", "Add", [mm, bias], (4, 32), name="bias")
    d = b.op("m", "Div", [h, sqrt2], (4, 32), name="div")
    e = b.op("m", "Erf", [d], (4, 32), name="erf")
    p = b.op("m", "Add", [e, one], (4, 32), name="add1")
    m1 = b.op("m", "Mul", [h, p], (4, 32), name="mul")
    m2 = b.op("m", "Mul", [m1, half], (4, 32), name="half")
    nxt = b.op("m", "MatMul", [m2, b.weight("m", "w2", (32, 16))], (4, 16), name="mm2")
    graph = fuse(b.build({"m": [nxt]}))
    assert _tasks(graph) == [("mm", "bias", "div", "erf", "add1", "mul", "half"), ("mm2",)]
    assert graph.tasks[0].name == "m/mm+..5..+half"


def test_silu_reading_its_input_twice_stays_fused() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", X)
    c = _conv(b, x, "conv")
    s = b.op("m", "Sigmoid", [c], X, name="sig")
    y = b.op("m", "Mul", [c, s], X, name="silu")
    assert _tasks(fuse(b.build({"m": [y]}))) == [("conv", "sig", "silu")]


def test_residual_add_joins_the_branch_that_computes_it() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", X)
    r1 = b.op("m", "Relu", [_conv(b, x, "conv1")], X, name="relu1")
    c2 = _conv(b, r1, "conv2")
    add = b.op("m", "Add", [c2, x], X, name="add")
    out = b.op("m", "Relu", [add], X, name="relu2")
    assert _tasks(fuse(b.build({"m": [out]}))) == [("conv1", "relu1"), ("conv2", "add", "relu2")]


def test_residual_add_of_two_conv_branches_joins_the_later_one() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", X)
    main = _conv(b, x, "conv_main")
    shortcut = _conv(b, x, "conv_down")
    out = b.op("m", "Relu", [b.op("m", "Add", [main, shortcut], X, name="add")], X, name="relu")
    assert _tasks(fuse(b.build({"m": [out]}))) == [("conv_main",), ("conv_down", "add", "relu")]


def test_output_with_two_consumers_ends_the_task() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", X)
    c = _conv(b, x, "conv")
    left = b.op("m", "Relu", [c], X, name="relu")
    right = b.op("m", "Sigmoid", [c], X, name="sig")
    graph = fuse(b.build({"m": [left, right]}))
    assert _tasks(graph) == [("conv",), ("relu",), ("sig",)]


def test_a_tail_may_feed_several_tasks() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", X)
    r = b.op("m", "Relu", [_conv(b, x, "conv")], X, name="relu")
    left, right = _conv(b, r, "left"), _conv(b, r, "right")
    graph = fuse(b.build({"m": [left, right]}))
    assert _tasks(graph) == [("conv", "relu"), ("left",), ("right",)]
    assert graph.to_networkx("task").number_of_edges() == 2


def test_diamond_through_another_task_is_not_fused_into_a_cycle() -> None:
    # a -> c (an anchor, its own task) -> add <- a: putting add in a's task would make a cycle
    b = GraphBuilder()
    x = b.input("m", "x", X)
    a = b.op("m", "Relu", [x], X, name="a")
    c = _conv(b, a, "conv")
    add = b.op("m", "Add", [a, c], X, name="add")
    graph = fuse(b.build({"m": [add]}))
    assert _tasks(graph) == [("a",), ("conv", "add")]
    assert nx.is_directed_acyclic_graph(graph.to_networkx("task"))


def test_elementwise_diamond_inside_one_task() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", X)
    c = _conv(b, x, "conv")
    left = b.op("m", "Exp", [c], X, name="exp")
    right = b.op("m", "Log", [c], X, name="log")
    out = b.op("m", "Add", [left, right], X, name="add")
    assert _tasks(fuse(b.build({"m": [out]}))) == [("conv", "exp", "log", "add")]


def test_views_fuse_into_their_producer_and_opaque_ops_stand_alone() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", (2, 6))
    shape = b.weight("m", "shape", (3,), dtype="int64")
    r = b.op("m", "Reshape", [x, shape], (2, 2, 3), name="reshape")
    t = b.op("m", "Transpose", [r], (2, 3, 2), name="transpose", perm=[0, 2, 1])
    u = b.op("m", "NonMaxSuppression", [t], (2, 3, 2), name="custom")
    v = b.op("m", "Relu", [u], (2, 3, 2), name="relu")
    g = b.op("m", "Gather", [v, b.weight("m", "idx", (1,), dtype="int64")], (1, 3, 2), name="gather")
    s = b.op("m", "Squeeze", [g], (3, 2), name="squeeze")
    graph = fuse(b.build({"m": [s]}))
    assert _tasks(graph) == [("reshape", "transpose"), ("custom",), ("relu",), ("gather", "squeeze")]
    kinds = [op_kind(op) for op in graph.ops]
    assert kinds[:3] == [OpKind.VIEW, OpKind.VIEW, OpKind.OPAQUE]


def test_no_fusion_across_tenants_even_when_interleaved() -> None:
    b = GraphBuilder()
    xa, xb = b.input("a", "x", X), b.input("b", "x", X)
    ca = _conv(b, xa, "conv", tenant="a")
    cb = _conv(b, xb, "conv", tenant="b")
    ra = b.op("a", "Relu", [ca], X, name="relu")
    rb = b.op("b", "Relu", [cb], X, name="relu")
    graph = fuse(b.build({"a": [ra], "b": [rb]}))
    assert [(t.tenant, t.ops) for t in graph.tasks] == [
        ("a", ("a/conv", "a/relu")),
        ("b", ("b/conv", "b/relu")),
    ]


def test_fuse_replaces_existing_tasks_and_keeps_costs() -> None:
    b = GraphBuilder()
    x = b.input("m", "x", X)
    out = b.op("m", "Relu", [_conv(b, x, "conv")], X, name="relu")
    graph = analyse(b.build({"m": [out]}))
    per_op = graph.replace(tasks=tuple(Task(i, "m", (op.name,), op.name) for i, op in enumerate(graph.ops)))
    fused = fuse(per_op.verify())
    assert _tasks(fused) == [("conv", "relu")]
    assert fused.task_cost(fused.tasks[0]) == graph.ops[0].cost + graph.ops[1].cost


def _synthetic(tenants: int, blocks: int) -> Graph:
    """Residual blocks (conv, bn, relu, conv, add, relu) per tenant, interleaved tenants."""
    b = GraphBuilder()
    heads = {f"t{k}": b.input(f"t{k}", "x", X) for k in range(tenants)}
    for i in range(blocks):
        for t, h in heads.items():
            c1 = _conv(b, h, f"c{i}a", tenant=t)
            bn = b.op(t, "BatchNormalization", [c1] + [b.weight(t, f"bn{i}{p}", (8,)) for p in "sbmv"], X)
            r = b.op(t, "Relu", [bn], X)
            c2 = _conv(b, r, f"c{i}b", tenant=t)
            heads[t] = b.op(t, "Relu", [b.op(t, "Add", [c2, h], X)], X)
    return b.build({t: [h] for t, h in heads.items()})


def test_many_ops_fuse_in_near_linear_time() -> None:
    graph = _synthetic(tenants=50, blocks=34)  # 10,200 ops
    fused = fuse(graph)
    assert len(fused.ops) == 10_200
    assert len(fused.tasks) == 50 * 34 * 2
    assert all(len(t.ops) == 3 for t in fused.tasks)


@pytest.mark.parametrize("legacy", [False, True], ids=["dynamo", "legacy"])
def test_every_tiny_zoo_model_fuses(legacy: bool) -> None:
    from cosched import zoo
    from cosched.ir import load_models

    paths = [zoo.export(name, size="tiny", legacy=legacy) for name in zoo.names()]
    graph = fuse(analyse(load_models(paths)))
    summary = summarize(graph)
    for tenant in summary.tenants:
        assert tenant.tasks < 0.8 * tenant.ops, f"{tenant.name}: {tenant.tasks} tasks for {tenant.ops} ops"
        assert tenant.flops > 0
    assert len(graph.tasks) == summary.total.tasks

"""The IR contract of split graphs: shard invariants, fusion, analysis of communication ops,
Gemm/MatMul/Gather corner cases of the passes, and onnxruntime segments around comm ops."""

from __future__ import annotations

import networkx as nx
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx_models import F, make_model, tensor
from sharding_helpers import assert_same_outputs
from tiny_graphs import GraphBuilder

from cosched.errors import GraphError, UnsupportedOpError
from cosched.execution.kernels import load_constants, prepare_kernels
from cosched.execution.ort import build_segment
from cosched.ir import analyse, fuse, load_models
from cosched.ir.graph import COMM_DOMAIN, Graph, Op, Task, frozen_mapping
from cosched.ir.sharding import SplitSpec, apply_splits
from cosched.runtime.sequential import SequentialExecutor

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _gemm_model() -> onnx.ModelProto:
    """x(4,6) -> Gemm(W1 (10,6) transB, C1 (10,)) -> Relu -> Gemm(W2 (10,5), C2 (1,5), alpha 2, beta 0.5)
    -> y; x -> MatMul(x3, W3 (6,9)) with x3 (2,4,6) -> Add(b (9,), t) -> z."""
    return make_model(
        [
            helper.make_node("Gemm", ["x", "w1", "c1"], ["h"], name="g1", transB=1),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "w2", "c2"], ["y"], name="g2", alpha=2.0, beta=0.5),
            helper.make_node("MatMul", ["x3", "w3"], ["t"], name="mm"),
            helper.make_node("Add", ["b", "t"], ["z"], name="add"),
        ],
        [tensor("x", F, [4, 6]), tensor("x3", F, [2, 4, 6])],
        [tensor("y", F, [4, 5]), tensor("z", F, [2, 4, 9])],
        {"w1": _w(10, 6), "c1": _w(10), "w2": _w(10, 5), "c2": _w(1, 5), "w3": _w(6, 9), "b": _w(9)},
        name="gemms",
    )


def _fallback_model() -> onnx.ModelProto:
    """x(4,6) -> MatMul(W (6,12)) -> Reshape (4,2,6) -> Transpose -> y (6,2,4);
    x -> Gemm(W2 (6,10)) -> g (4,10) -> Gemm(g, W3 (4,3), transA=1) -> z (10,3)."""
    return make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Reshape", ["h", "shape"], ["r"], name="view"),
            helper.make_node("Transpose", ["r"], ["y"], name="t", perm=[2, 1, 0]),
            helper.make_node("Gemm", ["x", "w2"], ["g"], name="g1"),
            helper.make_node("Gemm", ["g", "w3"], ["z"], name="g2", transA=1),
        ],
        [tensor("x", F, [4, 6])],
        [tensor("y", F, [6, 2, 4]), tensor("z", F, [10, 3])],
        {"w": _w(6, 12), "shape": np.array([4, 2, 6], dtype=np.int64), "w2": _w(6, 10), "w3": _w(4, 3)},
        name="fallback",
    )


@pytest.mark.parametrize("world", [2, 3])
def test_ops_that_cannot_run_on_parts_get_them_gathered(world: int) -> None:
    """The reshape cuts 12 columns into 2 blocks of 6: at world 3 the parts (4, 4, 4) do not
    follow them and are gathered first; a Gemm with transA does not contract the split axis."""
    graph = load_models([_fallback_model()])
    split = apply_splits(graph, [SplitSpec("tensor", "fallback", world)])
    gathered = {op.outputs[0].split("/")[1] for op in split.ops if op.op_type == "AllGather" and op.shard == 0}
    assert gathered == ({"h", "g"} if world == 3 else {"y", "g"})
    feeds = {"fallback": {"x": _w(4, 6)}}
    assert_same_outputs(SequentialExecutor(split).run(feeds), SequentialExecutor(graph).run(feeds))


def _gather_model(dtype: int) -> onnx.ModelProto:
    """Gather(table (7,3), idx) with idx of ``dtype``, some negative -> Relu -> y."""
    return make_model(
        [helper.make_node("Gather", ["table", "idx"], ["e"], name="lookup", axis=0),
         helper.make_node("Relu", ["e"], ["y"], name="relu")],
        [helper.make_tensor_value_info("idx", dtype, [2, 3])],
        [tensor("y", F, [2, 3, 3])],
        {"table": _w(7, 3)},
        name="emb",
    )


@pytest.mark.parametrize("world", [2, 3, 5])
def test_gemm_pair_with_trans_alpha_beta_and_a_left_bias(world: int) -> None:
    graph = load_models([_gemm_model()])
    feeds = {"gemms": {"x": _w(4, 6), "x3": _w(2, 4, 6)}}
    split = apply_splits(graph, [SplitSpec("tensor", "gemms", world)])
    types = [op.op_type for op in split.ops if op.is_comm]
    assert types.count("AllReduce") == world and types.count("AllGather") == world
    assert_same_outputs(SequentialExecutor(split).run(feeds), SequentialExecutor(graph).run(feeds))


@pytest.mark.parametrize("dtype", [TensorProto.INT64, TensorProto.INT32])
@pytest.mark.parametrize("world", [2, 3, 7])
def test_row_sharded_lookup_handles_negative_indices(dtype: int, world: int) -> None:
    graph = load_models([_gather_model(dtype)])
    idx = np.array([[0, 6, -1], [-7, 3, 4]], dtype=np.int64 if dtype == TensorProto.INT64 else np.int32)
    feeds = {"emb": {"idx": idx}}
    split = apply_splits(graph, [SplitSpec("embedding", "emb", world)])
    assert_same_outputs(SequentialExecutor(split).run(feeds), SequentialExecutor(graph).run(feeds))


def _two_shards() -> Graph:
    b = GraphBuilder()
    x = b.input("t", "x", (4,))
    y = b.op("t", "Relu", [x], (4,), name="a")
    b.op("t", "Neg", [y], (4,), name="b")
    return b.build({"t": []})


def _on(graph: Graph, shards: dict[str, int | None]) -> Graph:
    ops = tuple(op.replace(shard=shards[op.name.split("/")[1]]) for op in graph.ops)
    return graph.replace(ops=ops, tasks=tuple(Task(i, op.tenant, (op.name,), op.name, op.shard)
                                              for i, op in enumerate(ops)))


def test_verify_refuses_data_crossing_shards_without_communication() -> None:
    graph = _two_shards()
    _on(graph, {"a": 0, "b": 0}).verify()
    with pytest.raises(GraphError, match=r"'t/b' on shard 1 reads 't/a_out0', which is on shard 0"):
        _on(graph, {"a": 0, "b": 1}).verify()
    with pytest.raises(GraphError, match="every op has a shard, else none"):
        _on(graph, {"a": 0, "b": None}).verify()
    with pytest.raises(GraphError, match="reads 't/x', which is on shard 0"):  # graph inputs are on slot 0
        _on(graph, {"a": 1, "b": 1}).verify()


def test_verify_refuses_tasks_mixing_shards_and_comm_ops_sharing_a_task() -> None:
    graph = _on(_two_shards(), {"a": 0, "b": 0})
    with pytest.raises(GraphError, match="task 0 has shard 1"):
        graph.replace(tasks=(Task(0, "t", ("t/a", "t/b"), "ab", 1),)).verify()
    transfer = Op("t/move", "Transfer", "t", ("t/a_out0",), ("t/b_out0",),
                  frozen_mapping({"src": 0, "dst": 0}), COMM_DOMAIN, 1, shard=0)
    ops = (graph.ops[0], transfer)
    with pytest.raises(GraphError, match="communication op is alone"):
        graph.replace(ops=ops, tasks=(Task(0, "t", ("t/a", "t/move"), "x", 0),)).verify()
    wrong = transfer.replace(attrs=frozen_mapping({"src": 0, "dst": 1}))
    with pytest.raises(GraphError, match="runs on shard 0 but its attributes place it on 1"):
        graph.replace(ops=(graph.ops[0], wrong), tasks=()).verify()


def test_fusion_keeps_shards_apart_and_comm_ops_alone() -> None:
    split = apply_splits(load_models([_gemm_model()]), [SplitSpec("tensor", "gemms", 2)])
    fused = fuse(split)
    assert len(fused.tasks) < len(split.ops)  # something did fuse
    for task in fused.tasks:
        ops = fused.task_ops(task)
        assert {op.shard for op in ops} == {task.shard}
        assert not any(op.is_comm for op in ops) or len(ops) == 1
    # a Relu on shard 1 right after the Gemm on shard 1 fuses with it
    assert any(len(t.ops) > 1 and t.shard == 1 for t in fused.tasks)


def test_analysis_prices_comm_ops_by_the_bytes_they_move() -> None:
    split = analyse(apply_splits(load_models([_gemm_model()]), [SplitSpec("tensor", "gemms", 2)]))
    for op in split.ops:
        if not op.is_comm:
            continue
        assert op.cost is not None and op.cost.flops == 0 and op.cost.param_bytes == 0
        own = op.inputs[0] if op.op_type == "Transfer" else op.inputs[op.attr("rank")]
        assert op.cost.bytes_read == split.tensor(own).nbytes
        assert op.cost.bytes_written == split.tensor(op.outputs[0]).nbytes
    gather = next(op for op in split.ops if op.op_type == "AllGather")
    assert gather.cost.bytes_read == 2 * 4 * 5 * 4 and gather.cost.bytes_written == 2 * 4 * 9 * 4  # type: ignore[union-attr]


def test_ort_segments_refuse_comm_ops_and_load_the_rest() -> None:
    graph = load_models([_gemm_model()])
    feeds = {"gemms": {"x": _w(4, 6), "x3": _w(2, 4, 6)}}
    split = fuse(apply_splits(graph, [SplitSpec("tensor", "gemms", 3)]))
    constants = load_constants(split)
    env: dict[str, torch.Tensor] = dict(constants)
    env.update({f"gemms/{k}": torch.from_numpy(v) for k, v in feeds["gemms"].items()})
    kernels = {k.op.name: k for k in prepare_kernels(split.ops)}
    for task_id in nx.lexicographical_topological_sort(split.to_networkx("task")):
        task = split.task(task_id)
        if split.task_ops(task)[0].is_comm:
            with pytest.raises(UnsupportedOpError, match="communication op"):
                build_segment(split, [task_id], 1, constants)
            for name in task.ops:
                kernels[name](env)
        else:
            build_segment(split, [task_id], 1, constants)(env)
    got = {"gemms": {own: env[name].numpy() for own, name in split.tenant("gemms").outputs}}
    assert_same_outputs(got, SequentialExecutor(graph).run(feeds))

"""Per-device weight shards of multi-device plans: written, bound by sha256, read back alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from plan_graphs import on_slot, task_of
from safetensors.numpy import load_file

from cosched.cli import main
from cosched.codegen import emit_python, graph_for_plan, load_plan, lower, save_plan
from cosched.codegen.plan import load_device_weights
from cosched.errors import PlanError
from cosched.ir import load_models
from cosched.ir.graph import Graph, Op, TensorInfo, frozen_mapping
from cosched.ir.onnx_import import read_weights
from cosched.search.schedule import Schedule

CPU = {"kind": "cpu", "name": "test-cpu"}


def dense(path: Path, seed: int) -> Path:
    """y = relu(x @ w + b): x [2, 4], w [4, 3], b [3]; ops matmul, bias, relu."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
             helper.make_node("Add", ["h", "b"], ["z"], name="bias"),
             helper.make_node("Relu", ["z"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.fixture
def two(tmp_path: Path) -> Graph:
    return load_models([dense(tmp_path / "a.onnx", 0), dense(tmp_path / "b.onnx", 1)])


def placed(graph: Graph) -> Schedule:
    return Schedule((((0, 1, 2),), ((3, 4, 5),)))


def test_each_device_gets_exactly_the_weights_its_tasks_read(two: Graph, tmp_path: Path) -> None:
    plan = lower(two, placed(two), device=CPU)
    assert [[w.tensor for w in d.weights] for d in plan.devices] == [["a/b", "a/w"], ["b/b", "b/w"]]
    assert [d.weight_bytes for d in plan.devices] == [(12 + 3) * 4, (12 + 3) * 4]
    out = tmp_path / "plan"
    save_plan(plan, out, graph=two, module_source=emit_python(plan))
    assert sorted(p.name for p in (out / "weights").iterdir()) == ["device0.safetensors", "device1.safetensors"]
    loaded = load_plan(out)
    assert loaded.devices[1].weights_file == "weights/device1.safetensors"
    expected = read_weights(two, "b")
    shard = load_device_weights(loaded, 1)
    assert sorted(shard) == ["b/b", "b/w"]
    for name, value in shard.items():
        np.testing.assert_array_equal(value, expected[name])
    assert "a/w" not in load_file(str(out / "weights" / "device1.safetensors"))
    assert "weights/device0.safetensors" in (out / "plan_module.py").read_text()


def test_a_saved_multi_device_plan_rebuilds_its_graph(two: Graph, tmp_path: Path) -> None:
    plan = lower(two, placed(two), device=CPU)
    save_plan(plan, tmp_path / "plan", graph=two)
    rebuilt = graph_for_plan(load_plan(tmp_path / "plan"))
    assert [t.ops for t in rebuilt.tasks] == [t.ops for t in two.tasks]


def test_a_changed_shard_is_refused(two: Graph, tmp_path: Path) -> None:
    save_plan(lower(two, placed(two), device=CPU), tmp_path / "plan", graph=two)
    shard = tmp_path / "plan" / "weights" / "device0.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(PlanError, match=r"weight shard .*device0.safetensors of device cpu:0 has sha256 [0-9a-f]{64}, "
                                        r"but the plan was saved with sha256"):
        load_plan(tmp_path / "plan")
    shard.unlink()
    with pytest.raises(PlanError, match=r"weight shard of device cpu:0 not found"):
        load_plan(tmp_path / "plan")


def test_a_shard_outside_the_plan_directory_is_refused(two: Graph, tmp_path: Path) -> None:
    save_plan(lower(two, placed(two), device=CPU), tmp_path / "plan", graph=two)
    path = tmp_path / "plan" / "plan.json"
    data = json.loads(path.read_text())
    data["devices"][0]["weights_file"] = "../elsewhere.safetensors"
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=r"devices\[0\] \(cpu:0\): weights_file '../elsewhere.safetensors' must be a "
                                        r"path inside the plan directory"):
        load_plan(tmp_path / "plan")


def test_saving_needs_the_graph_for_the_weights(two: Graph, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"pass graph="):
        save_plan(lower(two, placed(two), device=CPU), tmp_path / "plan")
    assert not (tmp_path / "plan").exists()


def test_an_unsaved_plan_has_no_shard_to_read(two: Graph) -> None:
    with pytest.raises(PlanError, match=r"device cpu:0 holds 2 weight\(s\) but the plan names no weight shard"):
        load_device_weights(lower(two, placed(two), device=CPU), 0)


def with_transfer(graph: Graph) -> Graph:
    """Tenant a cut after its matmul: a Transfer moves h to the second stage (bias, relu)."""
    a_ops = [op for op in graph.ops if op.tenant == "a"]
    h = a_ops[0].outputs[0]
    moved = "a/h_moved"
    transfer = Op("a/move_h", "Transfer", "a", (h,), (moved,), frozen_mapping({"src": 0, "dst": 1}),
                  domain="cosched", opset=1)
    bias = a_ops[1].replace(inputs=(moved, *a_ops[1].inputs[1:]))
    ops = tuple(on_slot(op, slot) for op, slot in zip((a_ops[0], transfer, bias, a_ops[2]), (0, 1, 1, 1), strict=True))
    info = graph.tensor(h)
    tensors = {**graph.tensors, moved: TensorInfo(moved, info.shape, info.dtype, "a")}
    tasks = tuple(task_of(i, [op], op.name.split("/")[1]) for i, op in enumerate(ops))
    return graph.replace(ops=ops, tensors=frozen_mapping(tensors), tasks=tasks).verify()


def test_a_pipelined_tenant_splits_its_weights_between_stages(tmp_path: Path) -> None:
    g = with_transfer(load_models([dense(tmp_path / "a.onnx", 0)]))
    plan = lower(g, Schedule((((0,),), ((1, 2, 3),))), device=CPU,
                 devices=[{"kind": "cpu", "index": 0, "cap_bytes": 4096}, {"kind": "cpu", "index": 1}])
    assert [[w.tensor for w in d.weights] for d in plan.devices] == [["a/w"], ["a/b"]]
    assert [(d.weight_bytes, d.peak_activation_bytes) for d in plan.devices] == [(48, 24), (12, 48)]
    save_plan(plan, tmp_path / "plan", graph=g)
    loaded = load_plan(tmp_path / "plan")
    assert sorted(load_device_weights(loaded, 0)) == ["a/w"] and sorted(load_device_weights(loaded, 1)) == ["a/b"]


def test_splits_are_recorded_and_need_the_sharding_module(two: Graph, tmp_path: Path) -> None:
    spec = {"kind": "pipeline", "tenant": "a", "world": 2, "options": {"cuts": [1]}}
    plan = lower(two, placed(two), device=CPU, splits=[spec])
    assert plan.splits == (spec,)
    save_plan(plan, tmp_path / "plan", graph=two)
    data = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert data["schema_version"] == 2 and data["splits"] == [spec]
    try:
        import cosched.ir.sharding  # noqa: F401
    except ImportError:
        with pytest.raises(PlanError, match=r"the plan splits tenant\(s\) \['a'\], but this cosched has no "
                                            r"cosched.ir.sharding.apply_splits"):
            graph_for_plan(load_plan(tmp_path / "plan"))


def test_show_lists_each_device(two: Graph, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = lower(two, placed(two), device=CPU, devices=[{"kind": "cpu", "index": 0, "cap_bytes": 1000},
                                                       {"kind": "cpu", "index": 1}])
    save_plan(plan, tmp_path / "plan", graph=two)
    assert main(["show", str(tmp_path / "plan")]) == 0
    text = capsys.readouterr().out
    assert "rank 0  cpu:0" in text and "2 weights (60 bytes, weights/device0.safetensors)" in text
    assert "cap 1000" in text
    assert main(["show", str(tmp_path / "plan"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [d["device"] for d in summary["devices"]] == ["cpu:0", "cpu:1"]
    assert summary["devices"][1]["streams"] == [1] and summary["devices"][0]["cap_bytes"] == 1000

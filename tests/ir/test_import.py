"""ONNX import into the merged graph: namespacing, merging, dims, folding, weights, bad input."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import I64, F, make_model, mlp, tensor

from cosched.errors import (
    ConfigError,
    GraphError,
    ModelLoadError,
    ShapeError,
    UnsupportedOpError,
)
from cosched.ir import load_models, read_weights

Save = Callable[[onnx.ModelProto, str], Path]


# ----------------------------------------------------------- names and merge
def test_two_tenants_are_namespaced_and_merged() -> None:
    graph = load_models([mlp(), mlp()], names=["a", "b"], batch=2)
    assert graph.tenant_names == ("a", "b")
    assert [op.name for op in graph.ops] == ["a/mm", "a/add", "a/relu", "b/mm", "b/add", "b/relu"]
    assert graph.op("b/add").inputs == ("b/h", "b/b")
    assert graph.tensor("a/y").shape == (2, 3)
    assert graph.tensor("a/y").dtype == "float32"
    assert {graph.tensor(n).kind for n in ("a/x", "a/w", "a/h")} == {"input", "weight", "activation"}
    assert graph.weights["b/w"].tenant == "b" and graph.weights["b/w"].initializer == "w"
    a = graph.tenant("a")
    assert a.inputs == (("x", "a/x"),) and a.outputs == (("y", "a/y"),)
    assert a.batch == 2 and a.opsets == {"": 18}
    assert [(t.id, t.ops) for t in graph.tasks] == [(i, (op.name,)) for i, op in enumerate(graph.ops)]
    assert all(op.cost is None for op in graph.ops)
    graph.verify()


def test_tenant_names_default_to_file_stems_and_files_are_hashed(save: Save) -> None:
    path = save(mlp(), "classifier.onnx")
    graph = load_models([str(path)], batch=1)
    (info,) = graph.tenants
    assert info.name == "classifier" and info.source == str(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.model is None


def test_in_memory_models_take_their_graph_name_or_need_names() -> None:
    graph = load_models(mlp(name="scorer"), batch=1)
    assert graph.tenant_names == ("scorer",)
    assert graph.tenants[0].model is not None
    with pytest.raises(ConfigError, match="has no graph name"):
        load_models([mlp(name="")], batch=1)


def test_duplicate_tenant_names_are_rejected_naming_the_duplicate(save: Save, tmp_path: Path) -> None:
    first = save(mlp(), "net.onnx")
    (tmp_path / "other").mkdir()
    second = tmp_path / "other" / "net.onnx"
    onnx.save(mlp(), second)
    with pytest.raises(ConfigError, match="duplicate tenant name 'net'"):
        load_models([first, second], batch=1)
    with pytest.raises(ConfigError, match="duplicate tenant name 'x'"):
        load_models([mlp(), mlp()], names=["x", "x"], batch=1)


def test_unnamed_and_repeated_node_names_get_deterministic_names() -> None:
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("Neg", ["a"], ["b"], name="same"),
            helper.make_node("Abs", ["b"], ["y"], name="same"),
        ],
        [tensor("x", F, [2])],
        [tensor("y", F, [2])],
    )
    graph = load_models([model], names=["t"])
    assert [op.name for op in graph.ops] == ["t/Relu_0", "t/same", "t/same_1"]


def test_initializers_listed_as_inputs_are_weights_not_inputs() -> None:
    model = mlp()
    model.graph.input.append(tensor("w", F, [4, 3]))  # as exporters for IR < 4 do
    graph = load_models([model], names=["m"], batch=1)
    assert graph.tenant("m").inputs == (("x", "m/x"),)
    assert graph.tensor("m/w").kind == "weight"


def test_attributes_become_python_values() -> None:
    model = make_model(
        [
            helper.make_node("Transpose", ["x"], ["t"], name="tr", perm=[1, 0]),
            helper.make_node("Pad", ["t", "pads"], ["y"], name="pad", mode="reflect"),
        ],
        [tensor("x", F, [2, 3])],
        [tensor("y", F, ["d0", "d1"])],
        {"pads": np.array([0, 1, 0, 1], dtype=np.int64)},
    )
    graph = load_models([model], names=["m"])
    assert graph.op("m/tr").attrs == {"perm": (1, 0)}
    assert graph.op("m/pad").attr("mode") == "reflect"
    assert graph.tensor("m/y").shape == (3, 4)


# -------------------------------------------------------------- batch/shapes
def _seq_model() -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Cast", ["ids"], ["y"], name="cast", to=F)],
        [tensor("ids", I64, ["batch", "seq"])],
        [tensor("y", F, ["batch", "seq"])],
    )


def test_batch_mapping_and_input_shapes_fix_symbolic_dims() -> None:
    graph = load_models(
        [mlp(), _seq_model()],
        names=["m", "s"],
        batch={"m": 3, "s": 2},
        input_shapes={"s": {"ids": (2, 7)}},
    )
    assert graph.tensor("m/y").shape == (3, 3)
    assert graph.tensor("s/y").shape == (2, 7)
    assert graph.tenant("m").batch == 3


def test_a_remaining_symbolic_input_dim_is_a_shape_error_naming_it() -> None:
    with pytest.raises(ShapeError, match=r"'s'.*input 'ids'.*axis 1"):
        load_models([_seq_model()], names=["s"], batch=2)
    with pytest.raises(ShapeError, match=r"input 'x'.*axis 0.*--batch"):
        load_models([mlp()], names=["m"])


def test_static_batch_equal_to_the_given_batch_is_accepted() -> None:
    graph = load_models([mlp(batch=4)], names=["m"], batch=4)
    assert graph.tensor("m/y").shape == (4, 3)


def test_batch_for_a_model_without_batch_dim_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"tenant 'm'.*input 'x'.*static leading dim 4"):
        load_models([mlp(batch=4)], names=["m"], batch=8)
    scalar = make_model(
        [helper.make_node("Neg", ["x"], ["y"], name="neg")], [tensor("x", F, [])], [tensor("y", F, [])]
    )
    with pytest.raises(ConfigError, match=r"tenant 's'.*no input has a batch dim"):
        load_models([scalar], names=["s"], batch=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"batch": 0}, ConfigError, "batch must be an integer >= 1, got 0"),
        ({"batch": {"nope": 2}}, ConfigError, "unknown tenant.*'nope'"),
        ({"input_shapes": {"s": {"idz": (1, 2)}}}, ConfigError, r"unknown input\(s\) \['idz'\]"),
        ({"input_shapes": {"s": {"ids": (1, 2, 3)}}}, ShapeError, "input 'ids' has rank 2"),
    ],
)
def test_bad_batch_and_shape_options(kwargs: dict, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        load_models([_seq_model()], names=["s"], **kwargs)


def test_shape_conflicting_with_a_static_dim_names_tenant_and_input() -> None:
    with pytest.raises(ShapeError, match=r"tenant 'm'.*input 'x'.*static dim 4 at axis 1"):
        load_models([mlp()], names=["m"], input_shapes={"m": {"x": (2, 5)}})


# ------------------------------------------------------------------ folding
ONE = numpy_helper.from_array(np.array([1.0], dtype=np.float32))


def _legacy_reshape() -> onnx.ModelProto:
    """x[N, 3, 4] -> Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) -> Shape again."""
    return make_model(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Constant", [], ["zero"], name="c0", value=numpy_helper.from_array(np.array(0))),
            helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
            helper.make_node("Constant", [], ["ax"], name="c1", value=numpy_helper.from_array(np.array([0]))),
            helper.make_node("Unsqueeze", ["n", "ax"], ["n1"], name="unsq"),
            helper.make_node("Constant", [], ["m1"], name="c2", value=numpy_helper.from_array(np.array([-1]))),
            helper.make_node("Concat", ["n1", "m1"], ["target"], name="concat", axis=0),
            helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
            helper.make_node("Shape", ["flat"], ["fs"], name="shape2"),
            helper.make_node("ConstantOfShape", ["fs"], ["ones"], name="cos", value=ONE),
            helper.make_node("Add", ["flat", "ones"], ["y"], name="add"),
        ],
        [tensor("x", F, ["N", 3, 4])],
        [tensor("y", F, ["N", None])],
    )


def test_legacy_shape_chains_fold_to_constants() -> None:
    graph = load_models([_legacy_reshape()], names=["m"], batch=2)
    assert [op.op_type for op in graph.ops] == ["Reshape", "Add"]
    np.testing.assert_array_equal(graph.constants["m/target"], [2, -1])
    np.testing.assert_array_equal(graph.constants["m/ones"], np.ones((2, 12), np.float32))
    assert graph.tensor("m/target").kind == "constant"
    assert graph.tensor("m/y").shape == (2, 12)
    assert "m/s" not in graph.tensors  # folded away, used by nothing left


def test_if_on_a_constant_condition_folds_away() -> None:
    def branch(value: int) -> onnx.GraphProto:
        node = helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(np.array([value, -1])))
        return helper.make_graph([node], "b", [], [tensor("v", I64, [2])])

    model = make_model(
        [
            helper.make_node("Constant", [], ["cond"], name="c", value=numpy_helper.from_array(np.array(True))),
            helper.make_node("If", ["cond"], ["shape"], name="if", then_branch=branch(2), else_branch=branch(4)),
            helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape"),
        ],
        [tensor("x", F, [4, 3])],
        [tensor("y", F, ["d0", "d1"])],
    )
    graph = load_models([model], names=["m"])
    assert [op.op_type for op in graph.ops] == ["Reshape"]
    assert graph.tensor("m/y").shape == (2, 6)


def test_float_weights_are_never_folded_into_constants() -> None:
    model = make_model(
        [
            helper.make_node("Constant", [], ["i"], name="c", value=numpy_helper.from_array(np.array([1, 0]))),
            helper.make_node("Gather", ["table", "i"], ["rows"], name="gather"),
            helper.make_node("Add", ["rows", "x"], ["y"], name="add"),
        ],
        [tensor("x", F, [2, 3])],
        [tensor("y", F, [2, 3])],
        {"table": np.ones((4, 3), np.float32)},
    )
    graph = load_models([model], names=["m"])
    assert [op.op_type for op in graph.ops] == ["Gather", "Add"]
    assert graph.tensor("m/table").kind == "weight"


# ------------------------------------------------------------------ weights
def test_read_weights_from_file_and_memory(save: Save) -> None:
    model = mlp()
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    path = save(model, "m.onnx")
    graph = load_models([path, model], names=["f", "mem"], batch=1)
    for tenant in ("f", "mem"):
        values = read_weights(graph, tenant)
        assert sorted(values) == [f"{tenant}/b", f"{tenant}/w"]
        for name, array in expected.items():
            np.testing.assert_array_equal(values[f"{tenant}/{name}"], array)


def test_external_data_models_load_and_read_weights(tmp_path: Path) -> None:
    model = mlp()
    expected = numpy_helper.to_array(model.graph.initializer[0])
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)  # fmt: skip
    graph = load_models([path], batch=2)
    assert graph.tensor("ext/w").shape == (4, 3)
    np.testing.assert_array_equal(read_weights(graph, "ext")["ext/w"], expected)
    (tmp_path / "ext.data").unlink()
    with pytest.raises(ModelLoadError, match=r"initializer 'w'.*'ext.data'.*does not exist"):
        load_models([path], batch=2)


def test_read_weights_refuses_a_file_changed_since_import(save: Save) -> None:
    path = save(mlp(), "m.onnx")
    graph = load_models([path], batch=1)
    onnx.save(mlp(batch=3), path)
    with pytest.raises(ModelLoadError, match=r"tenant 'm'.*changed since import"):
        read_weights(graph, "m")


# ---------------------------------------------------------------- bad input
def test_missing_unreadable_truncated_and_non_onnx_files(save: Save, tmp_path: Path) -> None:
    missing = tmp_path / "absent.onnx"
    with pytest.raises(ModelLoadError, match=rf"{missing}.*does not exist"):
        load_models([missing])
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_models([tmp_path])
    good = save(mlp(), "good.onnx").read_bytes()
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match=rf"{truncated}.*truncated or not an ONNX model"):
        load_models([truncated])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelLoadError, match=rf"{text}.*(not an ONNX model|truncated)"):
        load_models([text])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=f"{empty} is empty"):
        load_models([empty])


def test_a_model_failing_the_checker_is_a_model_load_error() -> None:
    model = make_model([helper.make_node("Frobnicate", ["x"], ["y"], name="frob")],
                       [tensor("x", F, [2])], [tensor("y", F, [2])])  # fmt: skip
    with pytest.raises(ModelLoadError, match=r"tenant 'bad'.*onnx.checker.*Frobnicate"):
        load_models([model], names=["bad"])


def test_an_op_from_an_unknown_domain_names_op_and_domain() -> None:
    node = helper.make_node("FusedGelu", ["x"], ["y"], name="gelu", domain="com.microsoft")
    model = make_model([node], [tensor("x", F, [2])], [tensor("y", F, [2])])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError, match=r"op 'gelu' \(FusedGelu\).*domain 'com.microsoft'"):
        load_models([model], names=["m"])


def test_a_cycle_is_a_graph_error() -> None:
    model = make_model(
        [
            helper.make_node("Add", ["x", "b"], ["a"], name="first"),
            helper.make_node("Relu", ["a"], ["b"], name="second"),
        ],
        [tensor("x", F, [2])],
        [tensor("a", F, [2])],
    )
    with pytest.raises(GraphError, match=r"cycle.*'first'.*'second'|cycle.*'second'.*'first'"):
        load_models([model], names=["m"])


def test_a_missing_initializer_names_tensor_and_op() -> None:
    model = mlp()
    del model.graph.initializer[1]  # "b"
    with pytest.raises(GraphError, match=r"op 'add' \(Add\) reads tensor 'b'.*missing initializer"):
        load_models([model], names=["m"], batch=1)


def test_nodes_out_of_order_are_sorted() -> None:
    model = mlp()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    graph = load_models([model], names=["m"], batch=1)
    assert [op.name for op in graph.ops] == ["m/mm", "m/add", "m/relu"]


def test_an_unknown_dim_names_tensor_and_producing_op() -> None:
    model = make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")],
        [tensor("x", F, [2, 6]), tensor("shape", I64, [2])],
        [tensor("y", F, ["d0", "d1"])],
    )
    with pytest.raises(ShapeError, match=r"tensor 'm/y' produced by op 'm/reshape' \(Reshape\)"):
        load_models([model], names=["m"])


def test_an_empty_graph_is_a_graph_error() -> None:
    model = make_model([], [tensor("x", F, [2])], [tensor("x", F, [2])])
    with pytest.raises(GraphError, match=r"tenant 'void'.*no ops"):
        load_models([model], names=["void"])


def test_an_unsupported_dtype_names_the_tensor() -> None:
    model = make_model([helper.make_node("Identity", ["s"], ["y"], name="id")],
                       [tensor("s", TensorProto.STRING, [2])], [tensor("y", TensorProto.STRING, [2])])  # fmt: skip
    with pytest.raises(UnsupportedOpError, match=r"input 's'.*STRING"):
        load_models([model], names=["m"])


def test_control_flow_that_does_not_fold_is_unsupported() -> None:
    body = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["v"])], "b", [], [tensor("v", F, [2])]
    )
    model = make_model(
        [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=body, else_branch=body)],
        [tensor("c", TensorProto.BOOL, []), tensor("x", F, [2])],
        [tensor("y", F, [2])],
    )
    with pytest.raises(UnsupportedOpError, match=r"op 'm/branch' \(If\).*does not fold"):
        load_models([model], names=["m"])


def test_no_models_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no models"):
        load_models([])


# ---------------------------------------------------------------------- zoo
ZOO_NAMES = ("resnet50", "inception_v3", "googlenet", "mobilenet_v2", "squeezenet1_1", "bert", "dlrm")


@pytest.mark.parametrize("legacy", [False, True], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_tiny_zoo_model_imports_with_static_shapes(
    zoo_export: Callable[..., Path], name: str, legacy: bool
) -> None:
    path = zoo_export(name, size="tiny", legacy=legacy, dynamic_batch=True)
    graph = load_models([path], names=[name], batch=3).verify()
    assert graph.ops
    assert all(all(d >= 0 for d in t.shape) for t in graph.tensors.values())
    for _, output in graph.tenant(name).outputs:
        assert graph.tensor(output).shape[0] == 3
    leftovers = {"Shape", "Constant", "ConstantOfShape", "Range", "Size"}
    assert not [op.name for op in graph.ops if op.op_type in leftovers]


def test_legacy_bert_shape_chains_fold(zoo_export: Callable[..., Path]) -> None:
    path = zoo_export("bert", size="tiny", legacy=True, dynamic_batch=True)
    raw = onnx.load(path)
    assert sum(n.op_type in ("Shape", "Concat", "Constant") for n in raw.graph.node) > 20
    graph = load_models([path], names=["bert"], batch=2)
    reshape_targets = [graph.constants[op.inputs[1]] for op in graph.ops if op.op_type == "Reshape"]
    assert reshape_targets and all(target[0] == 2 for target in reshape_targets)
    assert not [op for op in graph.ops if op.op_type in ("Shape", "Gather") and op.inputs[0] in graph.constants]


def test_three_zoo_tenants_merge(zoo_export: Callable[..., Path]) -> None:
    paths = [zoo_export(n, size="tiny", legacy=n == "bert", dynamic_batch=True) for n in ("bert", "resnet50", "dlrm")]
    graph = load_models(paths, names=["bert", "resnet", "dlrm"], batch={"bert": 2, "resnet": 1, "dlrm": 4}).verify()
    assert graph.tenant_names == ("bert", "resnet", "dlrm")
    singles = [load_models([p], names=[n], batch=b) for p, n, b in zip(paths, graph.tenant_names, (2, 1, 4), strict=True)]
    assert [op.name for op in graph.ops] == [op.name for g in singles for op in g.ops]
    assert len(graph.tensors) == sum(len(g.tensors) for g in singles)
    dag = graph.to_networkx()
    assert all(dag.nodes[u]["tenant"] == dag.nodes[v]["tenant"] for u, v in dag.edges)


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_full_zoo_model_imports_with_static_shapes(
    zoo_export: Callable[..., Path], name: str, legacy: bool
) -> None:
    path = zoo_export(name, size="full", legacy=legacy, dynamic_batch=True)
    graph = load_models([path], names=[name], batch=2).verify()
    for _, output in graph.tenant(name).outputs:
        assert graph.tensor(output).shape[0] == 2
    assert not [op.name for op in graph.ops if op.op_type in ("Shape", "Constant", "ConstantOfShape")]


@pytest.mark.parametrize("legacy", [False, True], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_folded_values_and_static_shapes_match_onnxruntime(
    zoo_export: Callable[..., Path], name: str, legacy: bool
) -> None:
    """Run the original export in onnxruntime with every tensor as an output."""
    import onnxruntime as ort

    from cosched import zoo

    path = zoo_export(name, size="tiny", legacy=legacy, dynamic_batch=True)
    graph = load_models([path], names=[name], batch=2)
    model = onnx.load(path)
    declared = {o.name for o in model.graph.output}
    produced = [o for node in model.graph.node for o in node.output if o and o not in declared]
    model.graph.output.extend(onnx.ValueInfoProto(name=o) for o in produced)
    options = ort.SessionOptions()
    # unoptimised: onnxruntime 1.30's optimiser folds away some intermediates (a legacy bert's
    # /Range) even when they are graph outputs, and then refuses to produce them
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    values = dict(zip(names, session.run(names, zoo.example_inputs(name, "tiny", batch=2)), strict=True))
    if legacy and name in ("bert", "dlrm"):
        assert graph.constants, "a legacy export's shape chains should fold"
    for qualified, constant in graph.constants.items():
        np.testing.assert_array_equal(constant, values[qualified.split("/", 1)[1]], err_msg=qualified)
    for qualified, info in graph.tensors.items():
        own = qualified.split("/", 1)[1]
        if info.kind == "activation":
            assert (info.shape, info.dtype) == (values[own].shape, values[own].dtype.name), qualified

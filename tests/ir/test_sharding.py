"""The split passes on tiny zoo models: equal outputs, the communication they insert, errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from sharding_helpers import assert_same_outputs, feeds, reference, zoo_graph

from cosched.errors import ConfigError, CoschedError, UnsupportedOpError
from cosched.ir import analyse, fuse, read_weights
from cosched.ir.graph import Graph
from cosched.ir.sharding import SplitSpec, apply_splits, bounds, shard_weights, split_options
from cosched.ir.sharding.pipeline import balanced_cuts
from cosched.runtime.sequential import SequentialExecutor

CASES = [
    ("bert", "tensor", {}),
    ("bert", "pipeline", {}),
    ("bert", "embedding", {}),
    ("resnet50", "tensor", {}),
    ("resnet50", "pipeline", {}),
    ("mobilenet_v2", "tensor", {}),
    ("mobilenet_v2", "pipeline", {"balance": "params"}),
    ("dlrm", "embedding", {"mode": "row"}),
    ("dlrm", "embedding", {"mode": "table"}),
    ("dlrm", "tensor", {}),
]


def _split(model: str, kind: str, world: int, options: dict | None = None) -> Graph:
    return apply_splits(zoo_graph(model), [SplitSpec(kind, model, world, options or {})])  # type: ignore[arg-type]


def _comm(graph: Graph) -> Counter[str]:
    return Counter(op.op_type for op in graph.ops if op.is_comm)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize(("model", "kind", "options"), CASES)
def test_split_outputs_equal_the_unsplit_graph(model: str, kind: str, options: dict, world: int) -> None:
    split = _split(model, kind, world, options)
    assert {op.shard for op in split.ops} == set(range(world))
    assert sum(_comm(split).values()) > 0
    assert_same_outputs(SequentialExecutor(split).run(feeds(model)), reference(model))
    fused = analyse(fuse(split))  # fusion and analysis run after a split
    assert {t.shard for t in fused.tasks} == set(range(world))


def test_tensor_split_of_bert_reduces_once_per_mlp_and_attention_block() -> None:
    split = _split("bert", "tensor", 2)
    comm = _comm(split)
    assert comm["AllReduce"] == 2 * 2 * 2  # per layer: the attention block and the MLP, one op per rank
    assert comm["AllGather"] == 2  # the pooler Gemm, whose output is a graph output
    # the MLP's weights are sliced: columns of the first, rows of the second, nothing else kept
    first = {w.slice: n for n, w in split.weights.items() if w.initializer == "val_47"}
    assert set(first) == {(1, 0, 128), (1, 128, 256)}
    second = {w.slice for w in split.weights.values() if w.initializer == "val_49"}
    assert second == {(0, 0, 128), (0, 128, 256)}
    assert "bert/val_47" not in split.weights and "bert/val_47" not in split.tensors
    whole = read_weights(zoo_graph("bert"), "bert", names=["bert/val_47"])["bert/val_47"]
    parts = read_weights(split, "bert", names=list(first.values()))
    assert len(parts) == 2
    np.testing.assert_array_equal(np.concatenate([parts[first[(1, 0, 128)]], parts[first[(1, 128, 256)]]], axis=1),
                                  whole)


@pytest.mark.parametrize(("model", "kind", "options"), [("bert", "tensor", {}), ("dlrm", "embedding", {}),
                                                       ("dlrm", "embedding", {"mode": "table"}),
                                                       ("resnet50", "pipeline", {"balance": "params"})])
def test_each_shard_loads_only_its_part_of_the_weights(model: str, kind: str, options: dict) -> None:
    whole, split = zoo_graph(model), _split(model, kind, 2, options)
    per_shard = shard_weights(split, model)
    assert shard_weights(whole, model) == {0: tuple(sorted(whole.weights))}
    assert set(per_shard) == {0, 1}

    def nbytes(names: tuple[str, ...], graph: Graph) -> int:
        return sum(graph.tensor(n).nbytes for n in names)

    total = nbytes(tuple(whole.weights), whole)
    assert max(nbytes(names, split) for names in per_shard.values()) < total
    # every original weight is loaded once, whole or as slices that add up to it (a reshape's
    # shape is not loaded where each shard reshapes to its own shape, a constant)
    loaded = {n for names in per_shard.values() for n in names}
    by_source: dict[str, int] = {}
    for n in loaded:
        by_source[split.weights[n].initializer] = by_source.get(split.weights[n].initializer, 0) + \
            split.tensor(n).nbytes
    expected = {whole.weights[n].initializer: whole.tensor(n).nbytes for n in whole.weights}
    assert {k: expected[k] for k in by_source} == by_source
    for n in whole.weights:
        if whole.weights[n].initializer not in by_source:
            assert {op.op_type for op in whole.consumers(n)} == {"Reshape"}


def test_attention_is_split_by_whole_heads() -> None:
    split = _split("bert", "tensor", 3)  # 4 heads of 16 over 3 shards: 2, 1 and 1 heads
    query = {w.slice for w in split.weights.values() if w.initializer == "val_13"}
    assert query == {(1, 0, 32), (1, 32, 48), (1, 48, 64)}
    out_projection = {w.slice for w in split.weights.values() if w.initializer == "val_43"}
    assert out_projection == {(0, 0, 32), (0, 32, 48), (0, 48, 64)}
    softmax = Counter(split.tensor(op.outputs[0]).shape for op in split.ops if op.op_type == "Softmax")
    assert softmax == {(1, 2, 16, 16): 2, (1, 1, 16, 16): 4}  # two layers, per head group


def test_conv_splits_by_output_channels_and_gathers_before_a_grouped_conv() -> None:
    split = _split("mobilenet_v2", "tensor", 2)
    gathers = [op for op in split.ops if op.op_type == "AllGather"]
    assert gathers and all(op.attr("axis") == 1 for op in gathers)
    first = next(op for op in split.ops if op.op_type == "Conv")
    assert split.tensor(first.inputs[1]).shape[0] == 8 // 2 and first.shard == 0
    # resnet50: a Conv reading channel-split input is row-split (input channels), then reduced
    resnet = _split("resnet50", "tensor", 2)
    reduced = {name for op in resnet.ops if op.op_type == "AllReduce" for name in op.inputs}
    closers = [op for op in resnet.ops if op.op_type == "Conv" and op.outputs[0] in reduced]
    whole = {op.name: op for op in zoo_graph("resnet50").ops}
    for op in closers:
        original = whole[op.name.rsplit(".", 1)[0]]
        full = zoo_graph("resnet50").tensor(original.inputs[1]).shape[1]
        assert resnet.tensor(op.inputs[1]).shape[1] == resnet.tensor(op.inputs[0]).shape[1] == full // 2
    assert sum(1 for op in closers if len(op.inputs) > 2) == len(closers) // 2  # the bias on rank 0 only


def test_row_split_of_an_embedding_reduces_and_masks() -> None:
    split = _split("dlrm", "embedding", 3, {"mode": "row", "ops": ["node_embedding"]})
    assert _comm(split)["AllReduce"] == 3
    table = {w.slice for w in split.weights.values() if w.initializer == "tables.0.weight"}
    assert table == {(0, 0, 17), (0, 17, 34), (0, 34, 50)}
    assert bounds(50, 3) == [(0, 17), (17, 34), (34, 50)]


def test_table_split_places_whole_tables_largest_first() -> None:
    split = _split("dlrm", "embedding", 2, {"mode": "table"})
    shards = {op.name.split("/")[1]: op.shard for op in split.ops if op.op_type == "Gather" and not op.is_comm}
    # tables of 50, 30, 20 rows: 50 -> slot 0, 30 -> slot 1, 20 -> slot 1 (240 < 400 bytes)
    assert (shards["node_embedding"], shards["node_embedding_1"], shards["node_embedding_2"]) == (0, 1, 1)
    assert set(_comm(split)) == {"Transfer"}
    # the bag's pooling and the Unsqueeze run beside the table: the pooled (1, 1, 8) result moves
    moved = sorted(split.tensor(op.inputs[0]).shape for op in split.ops if op.op_type == "Transfer")
    assert moved == [(1, 1, 8), (1, 1, 8), (1, 2), (1, 2)]
    assert all(w.slice is None for w in split.weights.values())


def test_pipeline_cuts_are_where_given_and_data_moves_forward() -> None:
    split = _split("mobilenet_v2", "pipeline", 3, {"cuts": [10, 30]})
    compute = [op for op in split.ops if not op.is_comm]
    assert [op.shard for op in compute] == [0] * 10 + [1] * 20 + [2] * 23
    for op in split.ops:
        if op.op_type == "Transfer":
            assert op.attr("src") < op.attr("dst") == op.shard


def test_balanced_cuts_split_the_cost_evenly() -> None:
    assert balanced_cuts([1, 1, 1, 1, 1, 1], 3) == [2, 4]
    assert balanced_cuts([10, 1, 1, 1, 1, 6], 2) == [1]
    assert balanced_cuts([0, 0, 0, 0], 2) == [2]  # no cost: equal op counts
    assert balanced_cuts([100, 0, 0], 3) == [1, 2]  # every stage keeps an op


def test_split_options_list_the_splits_that_apply() -> None:
    def kinds(model: str, world: int) -> set[tuple[str, str | None]]:
        return {(s.kind, s.options.get("mode")) for s in split_options(zoo_graph(model), model, world)}

    assert kinds("dlrm", 3) == {("pipeline", None), ("tensor", None), ("embedding", "row"), ("embedding", "table")}
    assert kinds("dlrm", 4) == {("pipeline", None), ("tensor", None), ("embedding", "row")}
    assert kinds("mobilenet_v2", 2) == {("pipeline", None), ("tensor", None)}
    assert ("embedding", "row") in kinds("bert", 2)


def test_split_spec_round_trips_through_json() -> None:
    spec = SplitSpec("pipeline", "bert", 3, {"cuts": [5, 40], "balance": "flops"})
    again = SplitSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and hash(again) == hash(spec)
    assert again.to_json() == {"kind": "pipeline", "tenant": "bert", "world": 3,
                               "options": {"cuts": [5, 40], "balance": "flops"}}


@pytest.mark.parametrize(("make", "error", "words"), [
    (lambda: SplitSpec("tensor", "bert", 1), ConfigError, ["'bert'", "world must be an int >= 2", "got 1"]),
    (lambda: SplitSpec("sideways", "bert", 2), ConfigError, ["split kind", "'sideways'"]),  # type: ignore[arg-type]
    (lambda: SplitSpec("tensor", "bert", 2, {"ops": {1, 2}}), ConfigError, ["not JSON data"]),
    (lambda: SplitSpec.from_json({"kind": "tensor"}), ConfigError, ["kind, tenant, world"]),
])
def test_bad_split_specs_are_refused(make, error, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        make()
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize(("model", "spec", "error", "words"), [
    ("bert", SplitSpec("tensor", "gpt", 2), ConfigError, ["'gpt'", "tenants are ['bert']"]),
    ("dlrm", SplitSpec("tensor", "dlrm", 2, {"ops": ["node_linear_3"]}), ConfigError,
     ["'dlrm/node_linear_3'", "1 output columns", "world=2"]),
    ("dlrm", SplitSpec("tensor", "dlrm", 2, {"ops": ["node_relu"]}), UnsupportedOpError,
     ["'dlrm/node_relu'", "Relu", "MatMul, Gemm and Conv"]),
    ("dlrm", SplitSpec("tensor", "dlrm", 2, {"ops": ["nowhere"]}), ConfigError, ["'nowhere'", "'dlrm'"]),
    ("mobilenet_v2", SplitSpec("tensor", "mobilenet_v2", 2, {"ops": ["node_Conv_443"]}), UnsupportedOpError,
     ["grouped Conv"]),
    ("dlrm", SplitSpec("embedding", "dlrm", 2, {"ops": ["node_select"]}), UnsupportedOpError,
     ["'dlrm/node_select'", "not a weight table"]),
    ("dlrm", SplitSpec("embedding", "dlrm", 4, {"mode": "table"}), ConfigError, ["has 3", "at most 3"]),
    ("dlrm", SplitSpec("embedding", "dlrm", 2, {"mode": "columns"}), ConfigError, ["'row' or 'table'"]),
    ("resnet50", SplitSpec("embedding", "resnet50", 2), UnsupportedOpError, ["no Gather on a weight table"]),
    ("dlrm", SplitSpec("pipeline", "dlrm", 28), ConfigError, ["27 ops", "at most 27"]),
    ("dlrm", SplitSpec("pipeline", "dlrm", 3, {"cuts": [5, 5]}), ConfigError, ["2 increasing op indices"]),
    ("dlrm", SplitSpec("pipeline", "dlrm", 2, {"stages": 2}), ConfigError, ["unknown option", "'stages'"]),
])
def test_splits_that_cannot_apply_are_clear_errors(model: str, spec: SplitSpec, error: type, words: list[str]) -> None:
    with pytest.raises(error) as info:
        apply_splits(zoo_graph(model), [spec])
    assert all(w in str(info.value) for w in words), str(info.value)


def test_one_split_per_tenant_and_only_before_fusion() -> None:
    graph = zoo_graph("dlrm")
    with pytest.raises(ConfigError, match="one split per tenant"):
        apply_splits(graph, [SplitSpec("pipeline", "dlrm", 2), SplitSpec("tensor", "dlrm", 2)])
    with pytest.raises(ConfigError, match="is split already"):
        apply_splits(_split("dlrm", "pipeline", 2), [SplitSpec("tensor", "dlrm", 2)])
    with pytest.raises(CoschedError, match="unfused graph"):
        apply_splits(fuse(graph), [SplitSpec("tensor", "dlrm", 2)])


@pytest.mark.slow
@pytest.mark.parametrize(("model", "kind"), [("bert", "tensor"), ("resnet50", "tensor"), ("dlrm", "embedding")])
def test_full_size_splits_keep_the_outputs(model: str, kind: str) -> None:
    from cosched import zoo
    from cosched.ir import load_models

    graph = load_models([zoo.export(model, size="full")], names=[model])
    inputs = {model: zoo.example_inputs(model, "full")}
    split = apply_splits(graph, [SplitSpec(kind, model, 2)])  # type: ignore[arg-type]
    assert_same_outputs(SequentialExecutor(split).run(inputs), SequentialExecutor(graph).run(inputs))

from __future__ import annotations

import math

import pytest

from cosched.costmodel.features import (
    CORUN_FEATURES,
    STANDALONE_FEATURES,
    TASK_FEATURES,
    corun_vector,
    standalone_vector,
    task_features,
    task_signature,
)
from cosched.errors import CostModelError


def test_task_features_values_of_a_matmul_relu_layer(make_mlp):
    graph = make_mlp((16, 32), batch=2)
    feats = task_features(graph, graph.tasks[0])
    assert set(feats) == set(TASK_FEATURES)
    assert feats["n_ops"] == 2
    assert feats["count_MatMul"] == 1 and feats["count_Relu"] == 1 and feats["count_other"] == 0
    assert feats["anchor_MatMul"] == 1 and feats["anchor_Relu"] == 0
    assert feats["flops"] == 2 * 2 * 16 * 32 + 2 * 32
    assert feats["bytes_read"] == 4 * (2 * 16 + 16 * 32) + 4 * 2 * 32
    assert feats["bytes_written"] == 4 * 2 * 32 * 2
    assert feats["param_bytes"] == 4 * 16 * 32
    assert feats["intensity"] == pytest.approx(feats["flops"] / (feats["bytes_read"] + feats["bytes_written"]))
    assert feats["log_flops"] == pytest.approx(math.log1p(feats["flops"]))
    assert (feats["out_rank"], feats["out_d0"], feats["out_d1"], feats["out_d2"], feats["out_d3"]) == (2, 0, 0, 2, 32)
    assert feats["batch"] == 2


def test_identical_layers_share_a_signature_and_other_shapes_do_not(make_mlp):
    graph = make_mlp((16, 32, 32, 32, 8))
    sigs = [task_signature(graph, t) for t in graph.tasks]
    assert sigs[1] == sigs[2]  # 32 -> 32 twice
    assert len({sigs[0], sigs[1], sigs[3]}) == 3
    other_tenant = make_mlp((16, 32, 32, 32, 8), tenant="b")
    assert task_signature(other_tenant, other_tenant.tasks[1]) == sigs[1]
    assert task_signature(make_mlp((16, 32), batch=4), make_mlp((16, 32), batch=4).tasks[0]) != sigs[0]


def test_vectors_follow_the_documented_names(make_mlp, device):
    graph = make_mlp((16, 32, 64))
    a, b = (task_features(graph, t) for t in graph.tasks)
    assert len(standalone_vector(a, device)) == len(STANDALONE_FEATURES)
    row = dict(zip(CORUN_FEATURES, corun_vector(a, [b, b], device, 1, 2.0, [0.5, 0.25]), strict=True))
    assert row["co_count"] == 2 and row["threads"] == 1
    assert row["log_alone_ms"] == pytest.approx(math.log(2.0))
    assert row["co_log_alone_ratio"] == pytest.approx(math.log(0.25 / 2.0))
    assert row["co_calls_per_ms"] == pytest.approx(2.0 + 4.0)
    assert row["co_log_sum_flops"] == pytest.approx(math.log1p(2 * b["flops"]))
    assert row["roof_slowdown"] >= 1.0
    assert len(set(CORUN_FEATURES)) == len(CORUN_FEATURES)


def test_unanalysed_op_is_named(make_mlp):
    graph = make_mlp((16, 32))
    bare = graph.replace(ops=tuple(op.replace(cost=None) for op in graph.ops))
    with pytest.raises(CostModelError, match="a/matmul0"):
        task_features(bare, bare.tasks[0])

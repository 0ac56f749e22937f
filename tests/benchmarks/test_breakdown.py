"""benchmarks.breakdown: rows, breakdowns that add up, gaps that sum to the ratio (never timings)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import cosched.ir
from benchmarks import breakdown
from benchmarks.breakdown_report import (
    ELEMENTWISE,
    LAYOUT,
    MATMUL,
    OVERHEAD_RUN,
    OVERHEAD_TASK,
    attribute,
    op_table,
    pool,
    row_of,
    task_row,
)
from cosched import zoo


@pytest.fixture
def threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_onnxruntime_kernels_map_onto_onnx_rows() -> None:
    assert row_of("FusedConv", (64, [64, 1, 3, 3])) == "Conv depthwise"
    assert row_of("Conv", (64, [256, 64, 1, 1])) == "Conv 1x1"
    assert row_of("Conv", (64, [64, 64, 3, 3])) == "Conv 3x3"
    assert row_of("Conv", (3, [64, 3, 7, 7])) == "Conv other (7x7, 5x5, 1x7...)"
    assert row_of("Conv", (1, [8, 1, 3, 3])) == "Conv 3x3"  # one input channel is not depthwise
    assert {row_of(t) for t in ("FusedGemm", "Gemm", "FusedMatMul", "MatMul")} == {MATMUL}
    assert row_of("ReorderInput") == row_of("ReorderOutput") == LAYOUT
    assert {row_of(t) for t in ("Relu", "Add", "Gelu", "BiasGelu", "Reshape", "Transpose")} == {ELEMENTWISE}
    assert row_of("SkipLayerNormalization") == "LayerNormalization"
    assert row_of("MaxPool") == "MaxPool"


def test_gaps_sum_to_the_ratio_minus_one() -> None:
    cos = {"total_ms": 10.0, "rows_ms": {"Conv 3x3": 6.0, OVERHEAD_TASK: 3.0, OVERHEAD_RUN: 1.0}}
    ort = {"total_ms": 5.0, "rows_ms": {"Conv 3x3": 4.0, LAYOUT: 0.5, OVERHEAD_TASK: 0.5}}
    table = attribute(cos, ort, ratio=1.5)
    assert math.isclose(sum(v["c"] - v["o"] for v in table.values()), 0.5)
    assert table[LAYOUT] == {"c": 0.0, "o": 0.1}
    pooled = pool([table, attribute(cos, ort, ratio=2.5)])
    assert math.isclose(sum(v["c"] for v in pooled.values()), 2.0)
    lines = op_table(pooled)
    assert lines[-1] == "| **total** | 100% | 100% | 2.00x | +1.000 |"
    assert f"| {LAYOUT} | 0.0% | 10.0% | - |" in "\n".join(lines)


@pytest.mark.parametrize("model", ["resnet50", "bert"])
def test_both_breakdowns_add_up_and_cover_the_model(model: str, tmp_path: Path, threads: None) -> None:
    path = str(zoo.export(model, size="tiny", batch=1))
    kwargs: dict[str, Any] = {"iters": 2, "warmup": 1, "breakdown_runs": 2, "work": tmp_path}
    cos, cos_out = breakdown.measure("cosched", model, "tiny", 1, 1, path, **kwargs)
    ort, ort_out = breakdown.measure("ort", model, "tiny", 1, 1, path, **kwargs)
    assert len(cos["times_ms"]) == len(ort["times_ms"]) == 2
    assert cos_out is not None and ort_out is not None and set(cos_out[model]) == set(ort_out[model])
    graph = cosched.ir.fuse(cosched.ir.load_models([path], names=[model], batch=1))
    rows = {task_row(graph, task) for task in graph.tasks}
    assert rows | {OVERHEAD_TASK, OVERHEAD_RUN} == set(cos["breakdown"]["rows_ms"])
    kernels = {_family(row_of(t)) for t in ort["breakdown"]["op_ms"]}  # Conv's kind needs shapes
    assert kernels | {OVERHEAD_TASK, OVERHEAD_RUN} == {_family(r) for r in ort["breakdown"]["rows_ms"]}
    for side in (cos["breakdown"], ort["breakdown"]):
        assert math.isclose(sum(side["rows_ms"].values()), side["total_ms"], rel_tol=1e-9)
        assert all(ms >= 0 for row, ms in side["rows_ms"].items() if row != OVERHEAD_RUN)
    assert cos["breakdown"]["tasks"] == len(graph.tasks) and cos["breakdown"]["aten_ms"]
    assert 0 < cos["breakdown"]["op_by_op_over_traced"] < math.inf
    ratio = 1.7
    table = attribute(cos["breakdown"], ort["breakdown"], ratio)
    assert math.isclose(sum(v["c"] for v in table.values()), ratio)
    assert math.isclose(sum(v["o"] for v in table.values()), 1.0)


def _family(row: str) -> str:
    return "Conv" if row.startswith("Conv") else row


@pytest.mark.slow
def test_main_times_each_runner_in_its_own_process(tmp_path: Path) -> None:
    out, md = tmp_path / "result.json", tmp_path / "result.md"
    code = breakdown.main(["--models", "dlrm", "--size", "tiny", "--batches", "1", "--threads", "1", "--iters", "2",
                           "--repeats", "2", "--breakdown-runs", "1", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    result = json.loads(out.read_text())
    (config,) = result["configs"]
    assert {name: [len(r) for r in reps] for name, reps in config["times_ms"].items()} == {
        name: [2, 2] for name in breakdown.runners()}
    assert all(0 < r < math.inf for r in config["ratios"].values())
    assert config["outputs"]["cosched"]["agrees"]
    text = md.read_text()
    assert "| dlrm | 1 | 1 |" in text and "#### cosched against onnxruntime per op type: batch 1, 1 thread(s)" in text


def test_iters_per_batch_must_match_the_batches() -> None:
    with pytest.raises(SystemExit):
        breakdown.main(["--batches", "1", "8", "--iters", "1", "2", "3"])

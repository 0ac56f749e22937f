"""The rows of :mod:`benchmarks.breakdown` and its tables: op types of both sides on one scale.

An op's row is its ONNX op type, except where cosched and onnxruntime cut the same work
differently (the module doc of :mod:`benchmarks.breakdown` says why each merge is made):

- onnxruntime's fused and contrib kernels go to the ONNX type they replace (``FusedConv``
  -> Conv, ``FusedGemm`` -> Gemm, ``FusedMatMul`` -> MatMul, ``SkipLayerNormalization`` ->
  LayerNormalization, ``BiasGelu``/``FastGelu`` -> Gelu, ``NhwcMaxPool`` -> MaxPool);
- ``ReorderInput``/``ReorderOutput`` (NCHWc layout changes) have their own row;
- Conv is split by kind, from the weight's shape: depthwise, 1x1, 3x3, other (7x7, 5x5, 1x7...);
- MatMul and Gemm share a row (onnxruntime turns MatMul+Add into Gemm);
- elementwise ops and views (cosched's fusion kinds, :func:`cosched.ir.fusion.op_kind`) share
  a row: in cosched they mostly ride in the task of the op before them.

A row's cosched/ORT is "-" where one side spends no time in it. Every quantity is put in units of the model's onnxruntime time: a row's cosched time is its
share of cosched's breakdown times the cosched/onnxruntime ratio of the timed runs, its
onnxruntime time its share of onnxruntime's breakdown. A row's gap (cosched - onnxruntime
in those units) then sums over rows to the ratio minus one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from cosched.ir.fusion import OpKind, op_kind
from cosched.ir.graph import Graph, Op, Task

__all__ = ["ELEMENTWISE", "LAYOUT", "MATMUL", "OVERHEAD_RUN", "OVERHEAD_TASK", "attribute", "conv_kind",
           "format_markdown", "pool", "row_of", "task_row"]

LAYOUT = "layout (NCHWc reorders)"
MATMUL = "MatMul, Gemm"
ELEMENTWISE = "elementwise, views"
OVERHEAD_TASK = "overhead per task (ORT: between kernels)"
OVERHEAD_RUN = "overhead per run (bind, copy, free)"
ORT_ALIASES = {
    "FusedConv": "Conv", "NhwcConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul",
    "SkipLayerNormalization": "LayerNormalization", "SimplifiedLayerNormalization": "LayerNormalization",
    "SkipSimplifiedLayerNormalization": "LayerNormalization", "BiasGelu": "Gelu", "FastGelu": "Gelu",
    "QuickGelu": "Gelu", "NhwcMaxPool": "MaxPool", "ReorderInput": LAYOUT, "ReorderOutput": LAYOUT,
}


def conv_kind(in_channels: int, weight_shape: Sequence[int]) -> str:
    """The Conv row of a convolution of ``in_channels`` with a ``[out, in/group, k...]`` weight."""
    kernel = tuple(int(k) for k in weight_shape[2:])
    per_group = int(weight_shape[1]) if len(weight_shape) > 1 else in_channels
    if per_group == 1 and in_channels > 1:
        return "Conv depthwise"
    if kernel and all(k == 1 for k in kernel):
        return "Conv 1x1"
    if kernel == (3, 3):
        return "Conv 3x3"
    return "Conv other (7x7, 5x5, 1x7...)"


def row_of(op_type: str, conv: tuple[int, Sequence[int]] | None = None) -> str:
    """The row of an ONNX or onnxruntime op type; ``conv`` = (input channels, weight shape)."""
    op_type = ORT_ALIASES.get(op_type, op_type)
    if op_type == "Conv" and conv is not None:
        return conv_kind(*conv)
    if op_type in ("MatMul", "Gemm"):
        return MATMUL
    if op_kind(Op(op_type, op_type, "", (), ())) in (OpKind.ELEMENTWISE, OpKind.VIEW):
        return ELEMENTWISE
    return op_type


def task_row(graph: Graph, task: Task) -> str:
    """A task's row: that of its first op (an anchor heads its task, its epilogue follows)."""
    head = graph.task_ops(task)[0]
    conv = None
    if head.op_type == "Conv":
        data, weight = graph.tensor(head.inputs[0]).shape, graph.tensor(head.inputs[1]).shape
        conv = (int(data[1]), tuple(int(d) for d in weight))
    return row_of(head.op_type, conv)


# ------------------------------------------------------------------------------ attribution
def attribute(cosched: Mapping[str, Any], ort: Mapping[str, Any], ratio: float) -> dict[str, dict[str, float]]:
    """Per row: cosched and onnxruntime time in units of onnxruntime's (``c``, ``o``), from two
    breakdowns (``rows_ms`` summing to ``total_ms``) and the timed cosched/onnxruntime ``ratio``."""
    rows = sorted(set(cosched["rows_ms"]) | set(ort["rows_ms"]))
    return {row: {"c": cosched["rows_ms"].get(row, 0.0) / cosched["total_ms"] * ratio,
                  "o": ort["rows_ms"].get(row, 0.0) / ort["total_ms"]} for row in rows}


def pool(attributions: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """The mean over models of :func:`attribute`'s values (each model weighs the same)."""
    rows = sorted({row for a in attributions for row in a})
    return {row: {k: statistics.fmean(a.get(row, {}).get(k, 0.0) for a in attributions) for k in ("c", "o")}
            for row in rows}


def _shares(table: Mapping[str, Mapping[str, float]]) -> list[tuple[str, float, float, float, float]]:
    """(row, cosched share, ORT share, cosched/ORT, gap) rows, largest gap first."""
    total_c = sum(v["c"] for v in table.values())
    total_o = sum(v["o"] for v in table.values())
    out = [(row, v["c"] / total_c, v["o"] / total_o, v["c"] / v["o"] if v["o"] > 0 < v["c"] else math.nan,
            v["c"] - v["o"]) for row, v in table.items()]
    return sorted(out, key=lambda r: -r[4])


def _ratio(value: float) -> str:
    return "-" if math.isinf(value) or math.isnan(value) else f"{value:.2f}x"


def op_table(table: Mapping[str, Mapping[str, float]]) -> list[str]:
    lines = ["| row | cosched share | ORT share | cosched / ORT | adds to cosched / ORT |", "|---|---|---|---|---|"]
    for row, c, o, ratio, gap in _shares(table):
        lines.append(f"| {row} | {c:.1%} | {o:.1%} | {_ratio(ratio)} | {gap:+.3f} |")
    total_c = sum(v["c"] for v in table.values())
    lines.append(f"| **total** | 100% | 100% | {total_c:.2f}x | {total_c - 1:+.3f} |")
    return lines


def top_gaps(table: Mapping[str, Mapping[str, float]], n: int = 3) -> str:
    return ", ".join(f"{row} {gap:+.2f}" for row, _, _, _, gap in _shares(table)[:n])


# ------------------------------------------------------------------------------- markdown
def format_markdown(result: Mapping[str, Any]) -> str:
    """The BENCHMARKS.md section of a :func:`benchmarks.breakdown.main` result."""
    configs = result["configs"]
    variants = result["variants"]
    runs = ", ".join(f"{i} at batch {b}" for i, b in zip(result["iters"], result["batches"], strict=True))
    lines = [f"### cosched sequential against onnxruntime, per op type ({', '.join(result['models'])})", "",
             f"Command: `{result['command']}`; machine: {result['machine']}; date {result['date']}; "
             f"load average {result['load_before']:.2f} before, {result['load_after']:.2f} after. "
             f"{result['repeats']} repeats, each runner alone in a fresh process, order rotated; timed "
             f"runs per process: {runs}. Breakdowns from the first repeat's processes, after their timed "
             "runs. Gaps are in units of the model's onnxruntime time and sum over rows to cosched/ORT - 1.", ""]
    head = " | ".join(f"{v} / ORT" for v in variants)
    lines += [f"| model | batch | threads | {head} | spread | op by op / traced | outputs agree "
              "| largest gaps (x ORT time) |", "|---|---|---|" + "---|" * len(variants) + "---|---|---|---|"]
    for c in configs:
        ratios = " | ".join(_ratio(c["ratios"][v]) for v in variants)
        agrees = all(check["agrees"] for check in c["outputs"].values())
        lines.append(f"| {c['model']} | {c['batch']} | {c['threads']} | {ratios} | {c['spread']:.0%} | "
                     f"{_ratio(c['op_by_op_over_traced'])} | {'yes' if agrees else 'NO'} | "
                     f"{top_gaps(c['attribution'][variants[0]])} |")
    for variant in variants:
        for batch in result["batches"]:
            for threads in result["threads"]:
                chosen = [c for c in configs if c["batch"] == batch and c["threads"] == threads]
                if not chosen:
                    continue
                lines += ["", f"#### {variant} against onnxruntime per op type: batch {batch}, {threads} "
                          f"thread(s), mean over {len(chosen)} model(s)", ""]
                lines += op_table(pool([c["attribution"][variant] for c in chosen]))
    lines += ["", "<details><summary>Per model</summary>", ""]
    for c in configs:
        aten = c["breakdown"][variants[0]].get("aten_ms", {})
        total = sum(aten.values()) or 1.0
        top = ", ".join(f"{name} {ms / total:.0%}" for name, ms in sorted(aten.items(), key=lambda kv: -kv[1])[:5])
        lines += [f"**{c['model']}, batch {c['batch']}, {c['threads']} thread(s)** "
                  f"({variants[0]}; its aten ops: {top})", "", *op_table(c["attribution"][variants[0]]), ""]
    lines.append("</details>")
    return "\n".join(lines)

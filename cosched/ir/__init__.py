"""The merged multi-tenant operator-graph IR.

Layering: the bottom of the pipeline; imports only :mod:`cosched.errors` (and onnx, in the
importer and :mod:`~cosched.ir.onnx_io` alone)."""

from __future__ import annotations

from cosched.ir.analysis import analyse, critical_path
from cosched.ir.fusion import fuse
from cosched.ir.graph import Graph, Op, OpCost, Task, TenantInfo, TensorInfo, WeightRef
from cosched.ir.onnx_import import load_models, read_weights
from cosched.ir.summary import GraphSummary, format_summary, summarize

__all__ = [
    "Graph",
    "GraphSummary",
    "Op",
    "OpCost",
    "Task",
    "TenantInfo",
    "TensorInfo",
    "WeightRef",
    "analyse",
    "critical_path",
    "format_summary",
    "fuse",
    "load_models",
    "read_weights",
    "summarize",
]

"""The merged multi-tenant operator-graph IR."""

from __future__ import annotations

from cosched.ir.graph import Graph, Op, OpCost, Task, TenantInfo, TensorInfo, WeightRef

__all__ = ["Graph", "Op", "OpCost", "Task", "TenantInfo", "TensorInfo", "WeightRef"]

"""Cost models: device specs, profiling, profile store, XGBoost and roofline latency models."""

from __future__ import annotations

from cosched.costmodel.base import CostModel

__all__ = ["CostModel"]

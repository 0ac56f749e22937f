"""Cost models: device specs, profiling, profile store, XGBoost and roofline latency models,
and the alpha-beta communication model (``CommModel``, measured by ``profile_comm``).

``XGBoostModel`` and ``evaluate`` are imported on first use, so that importing the interface
does not load xgboost.

Layering: imports :mod:`cosched.execution` (the profiler times tasks exactly as the executors
run them), :mod:`cosched.ir` and :mod:`cosched.ops`; never the search, codegen or runtime.
What can only be measured by running plans is measured above the stages, in
:mod:`cosched.calibration`.
"""

from __future__ import annotations

from typing import Any

from cosched.costmodel.base import CostModel
from cosched.costmodel.comm import CommModel
from cosched.costmodel.commprofiler import CommProfileConfig, profile_comm
from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.features import task_features, task_signature
from cosched.costmodel.profiler import ProfileConfig, Profiler
from cosched.costmodel.roofline import RooflineModel
from cosched.costmodel.store import (
    CommRecord,
    CorunGroup,
    ProfileData,
    ProfileStore,
    StandaloneRecord,
)

__all__ = [
    "CommModel",
    "CommProfileConfig",
    "CommRecord",
    "CorunGroup",
    "CostModel",
    "DeviceSpec",
    "ProfileConfig",
    "ProfileData",
    "ProfileStore",
    "Profiler",
    "RooflineModel",
    "StandaloneRecord",
    "XGBoostModel",
    "evaluate",
    "profile_comm",
    "task_features",
    "task_signature",
]


def __getattr__(name: str) -> Any:
    if name == "XGBoostModel":
        from cosched.costmodel.xgb import XGBoostModel

        return XGBoostModel
    if name == "evaluate":
        from cosched.costmodel.evaluate import evaluate

        return evaluate
    raise AttributeError(f"module 'cosched.costmodel' has no attribute {name!r}")

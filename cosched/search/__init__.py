"""Schedule search: the schedule value, the simulator, baselines, the exact optimum and the
Optuna-driven optimizer over a priority-list decoder; for several devices, memory per device
and placement (:mod:`~cosched.search.placement`), the splits a tenant too large for any device
needs (:mod:`~cosched.search.splitting`) and the joint search of splits, placement and each
device's streams (:mod:`~cosched.search.multidevice`).

Layering: imports :mod:`cosched.costmodel` (latencies) and :mod:`cosched.ir`; never codegen or
the runtime. Measuring finalists on the device is a callable passed in (``timer``), made in
:mod:`cosched.calibration`."""

from __future__ import annotations

from cosched.search.baselines import Baseline, all_baselines
from cosched.search.costtable import CostTable
from cosched.search.decoder import DecoderKnobs, decode
from cosched.search.exact import ExactResult, optimum
from cosched.search.optimizer import SearchConfig, SearchResult, optimize
from cosched.search.schedule import Schedule
from cosched.search.simulator import Interference, SimResult, simulate

__all__ = [
    "Baseline",
    "CostTable",
    "DecoderKnobs",
    "ExactResult",
    "Interference",
    "Schedule",
    "SearchConfig",
    "SearchResult",
    "SimResult",
    "all_baselines",
    "decode",
    "optimize",
    "optimum",
    "simulate",
]

"""The plans a server runs, one per set of active tenants, sharing what they load.

:class:`PlanCache` answers the server (:mod:`cosched.runtime.serve`) with a :class:`Runner`
per set of tenants that have requests waiting: the full plan for every tenant, the set's own
plan where ``compile(serve=True)`` searched one (``source="compiled"``), and otherwise a plan
composed from the full plan's schedule (:func:`cosched.codegen.subset.subset_plan`,
``source="composed"``), which the server's stats report, so a set never fails for want of
a plan.

Every runner's executor runs over the plan's graph cut to its set
(:func:`cosched.ir.cut.tenant_graph`), registered as a cut of the plan's graph
(:func:`cosched.execution.sharing.share`): weights and folded constants are loaded once,
a task is traced once, and an onnxruntime segment that two plans cut alike is one session.
What does grow with the number of plans: each executor's worker threads (one per stream,
idle between runs) and onnxruntime sessions of segments that plans cut differently (each
holds a copy of its weights).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosched.codegen.plan import Plan
from cosched.codegen.serving import SetKey, set_label
from cosched.codegen.subset import subset_plan
from cosched.errors import ConfigError, InputError
from cosched.execution.bindings import (
    check_finite,
    check_index_inputs,
    random_inputs,
    validate_inputs,
)
from cosched.execution.sharing import share
from cosched.ir.cut import checked_tenants, tenant_graph
from cosched.ir.graph import Graph
from cosched.runtime.executor import Executor

__all__ = ["PlanCache", "Runner"]


@dataclass
class Runner:
    """The plan of one set of tenants with its executor: ``run`` takes and returns exactly
    those tenants' inputs and outputs. ``source`` is ``"full"``, ``"compiled"`` or
    ``"composed"`` (see the module docstring)."""

    tenants: frozenset[str]
    source: str
    plan: Plan
    executor: Executor

    def run(self, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
        return self.executor.run(inputs)

    @property
    def predicted_ms(self) -> float | None:
        return self.plan.predicted_ms.get("plan")


class PlanCache:
    """Runners by set of tenants over one plan (see the module docstring).

    ``subsets`` are the set plans compiled with the plan (``CompiledPlan.subsets``);
    ``slo_ms`` the tenants' latency objectives; ``executor`` builds an executor of a plan
    over its graph (default :class:`Executor`; tests pass their own).
    """

    def __init__(self, plan: Plan, graph: Graph, subsets: Mapping[SetKey, Plan] | None = None, *,
                 slo_ms: Mapping[str, float] | None = None,
                 executor: Callable[[Plan, Graph], Executor] | None = None) -> None:
        if plan.devices:
            raise ConfigError(f"a server runs one-device plans; this plan runs on {len(plan.devices)} devices")
        self.plan = plan
        self.graph = graph
        self.tenants: tuple[str, ...] = tuple(plan.tenants)
        self.slo_ms: dict[str, float] = dict(slo_ms or {})
        if self.slo_ms:
            checked_tenants(self.tenants, self.slo_ms, "the plan")
        self.subsets: dict[SetKey, Plan] = {frozenset(k): v for k, v in (subsets or {}).items()}
        for key in self.subsets:
            checked_tenants(self.tenants, key, "the plan")
        self._executor = executor or (lambda p, g: Executor(p, g))
        self._single = {t: tenant_graph(graph, [t]) for t in self.tenants}  # to check requests against
        self._runners: dict[SetKey, Runner] = {}
        self._lock = threading.Lock()

    def check_request(self, tenant: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``inputs`` of one request of ``tenant``, checked as ``CompiledPlan.run`` checks them
        (names, shapes, dtypes, index ranges, NaN / inf): an :class:`InputError` names the
        tenant and the tensor."""
        if tenant not in self._single:
            raise InputError(f"unknown tenant {tenant!r}; the plan serves {list(self.tenants)}")
        graph = self._single[tenant]
        arrays = validate_inputs(graph, {tenant: inputs})
        check_index_inputs(graph, arrays)
        check_finite(arrays, "input", strict=True)
        return arrays[tenant]

    def predicted_ms(self, active: SetKey) -> float | None:
        """The predicted makespan of ``active``'s plan; None for a set without one."""
        key = frozenset(active)
        plan = self.plan if key == frozenset(self.tenants) else self.subsets.get(key)
        return None if plan is None else plan.predicted_ms.get("plan")

    def runner(self, active: SetKey) -> Runner:
        """The runner of ``active`` (built on first use, then kept)."""
        key = checked_tenants(self.tenants, active, "the plan")
        with self._lock:
            if key not in self._runners:
                self._runners[key] = self._build(key)
            return self._runners[key]

    def _build(self, key: SetKey) -> Runner:
        if key == frozenset(self.tenants):
            return Runner(key, "full", self.plan, self._executor(self.plan, self.graph))
        if key in self.subsets:
            plan, source = self.subsets[key], "compiled"
            cut = tenant_graph(self.graph, key)
        else:
            (plan, cut), source = subset_plan(self.plan, self.graph, key), "composed"
        return Runner(key, source, plan, self._executor(plan, share(cut, self.graph)))

    def sources(self) -> dict[SetKey, str]:
        """Every runner built so far -> its source."""
        with self._lock:
            return {key: r.source for key, r in self._runners.items()}

    def warm(self) -> None:
        """Build the runner of the full plan and of every cached set, and run each once on
        random inputs (traces and sessions specialise on early runs)."""
        for key in [frozenset(self.tenants), *self.subsets]:
            runner = self.runner(key)
            runner.run(random_inputs(tenant_graph(self.graph, key)))

    def describe(self, key: SetKey) -> str:
        return set_label(key, self.tenants)

    def close(self) -> None:
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        for r in runners:
            r.executor.close()

"""The plans a server runs, one per set of active tenants, sharing what they load.

:class:`PlanCache` answers the server (:mod:`cosched.runtime.serve`) with a :class:`Runner`
per set of tenants that have requests waiting: the full plan for every tenant, the set's own
plan where ``compile(serve=True)`` searched one (``source="compiled"``), and otherwise a plan
composed from the full plan's schedule (:func:`cosched.codegen.subset.subset_plan`,
``source="composed"``), which the server's stats report, so a set never fails for want of
a plan.

Every runner's executor (the full plan's too) runs over the plan's graph cut to its set
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
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosched.codegen.plan import Plan
from cosched.codegen.serving import SetKey
from cosched.codegen.subset import subset_plan
from cosched.errors import ConfigError, InputError
from cosched.execution import sharing
from cosched.execution.bindings import (
    check_finite,
    check_index_inputs,
    random_inputs,
    validate_inputs,
)
from cosched.execution.ort import release_segments
from cosched.ir.cut import checked_tenants, tenant_graph
from cosched.ir.graph import Graph
from cosched.runtime.executor import Executor, default_threads

__all__ = ["PlanCache", "Runner", "default_lanes", "share_threads"]


def default_lanes(plan: Plan) -> int:
    """How many dispatches a server of ``plan`` runs at once by default: two on a CPU of two
    or more cores serving two or more tenants, else one. Measured on the vision mix on 2
    cores (BENCHMARKS.md, "Serving under load"): two lanes left 3-7x fewer requests outside
    their SLO than one at every load, since a small tenant's request no longer waits for a
    long dispatch. On CUDA concurrent dispatches have not been measured: one there."""
    cores = default_threads(1)
    return 2 if plan.device_kind == "cpu" and cores >= 2 and len(plan.tenants) >= 2 else 1


def share_threads(streams: int, share: int) -> int | None:
    """Intra-op threads per stream of a plan of ``streams`` streams that runs beside
    ``share - 1`` other plans: the cores split evenly among every stream running, at least
    one; None (the executor's default, the cores shared by the plan's streams alone) when it
    runs alone or the split gives no fewer threads than that."""
    threads = default_threads(streams * share)
    return None if share <= 1 or threads >= default_threads(streams) else threads


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
    ``slo_ms`` the tenants' latency objectives; ``executor(plan, graph, threads)`` builds an
    executor of a plan over its graph with ``threads`` intra-op threads per stream (None: the
    executor's default, the cores shared by the plan's streams); by default
    :class:`Executor`, tests pass their own.
    """

    def __init__(self, plan: Plan, graph: Graph, subsets: Mapping[SetKey, Plan] | None = None, *,
                 slo_ms: Mapping[str, float] | None = None,
                 executor: Callable[[Plan, Graph, int | None], Executor] | None = None) -> None:
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
        self._executor = executor or (lambda p, g, threads: Executor(p, g, threads_per_stream=threads))
        self._single = {t: tenant_graph(graph, [t]) for t in self.tenants}  # to check requests against
        self._runners: dict[tuple[SetKey, int | None], Runner] = {}
        self._sets: dict[SetKey, tuple[Plan, str, Graph]] = {}
        self._building: dict[tuple[SetKey, int | None], Future[Runner]] = {}
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

    def runner(self, active: SetKey, share: int = 1) -> Runner:
        """The runner of ``active`` (built on first use, then kept). ``share`` > 1: the plan
        runs beside ``share - 1`` other dispatches, so its streams take ``1 / share`` of the
        cores (:func:`share_threads`): a runner of its own, whose onnxruntime sessions have
        that many threads. Built outside the cache's lock (building takes seconds: other
        lanes go on meanwhile), once: a second caller of the same runner waits for the first."""
        key = checked_tenants(self.tenants, active, "the plan")
        plan, source, cut = self._plan_of(key)
        threads = share_threads(len(plan.streams), share)
        with self._lock:
            if (key, threads) in self._runners:
                return self._runners[key, threads]
            building = self._building.get((key, threads))
            owner = building is None
            if owner:
                building = self._building[key, threads] = Future()
        assert building is not None
        if not owner:
            return building.result()
        try:
            runner = Runner(key, source, plan, self._executor(plan, sharing.share(cut, self.graph), threads))
        except BaseException as exc:
            with self._lock:
                del self._building[key, threads]
            building.set_exception(exc)
            raise
        with self._lock:
            self._runners[key, threads] = runner
            del self._building[key, threads]
        building.set_result(runner)
        return runner

    def _plan_of(self, key: SetKey) -> tuple[Plan, str, Graph]:
        """(plan, source, the graph cut to the set) of a set, made once (a composed plan too)."""
        with self._lock:
            if key in self._sets:
                return self._sets[key]
        if key == frozenset(self.tenants):  # a cut too (of every tenant), so that it shares as the others do
            made = self.plan, "full", tenant_graph(self.graph, key)
        elif key in self.subsets:
            made = self.subsets[key], "compiled", tenant_graph(self.graph, key)
        else:
            plan, cut = subset_plan(self.plan, self.graph, key)
            made = plan, "composed", cut
        with self._lock:
            return self._sets.setdefault(key, made)

    def sources(self) -> dict[SetKey, str]:
        """Every runner built so far -> its source."""
        with self._lock:
            return {key: r.source for (key, _), r in self._runners.items()}

    def warm(self, shares: int = 1) -> None:
        """Build the runners of the full plan and of every cached set, at each share of the
        device from 1 to ``shares`` (a server's lanes), and run each once on random inputs
        (traces and sessions specialise on early runs)."""
        for key in [frozenset(self.tenants), *self.subsets]:
            feed = random_inputs(self._plan_of(key)[2])  # the set's cut graph
            for share in range(1, shares + 1):
                self.runner(key, share).run(feed)

    def close(self) -> None:
        """Close every runner's executor and let go of the onnxruntime sessions of the plan's
        graph (:func:`cosched.execution.ort.release_segments`): what no other executor uses is
        freed."""
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        for r in runners:
            r.executor.close()
        release_segments(self.graph)

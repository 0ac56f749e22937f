"""``cosched.compile()``: the pipeline, one named step a line, and ``cosched.load()``.

Nothing but wiring lives here: each step is a call into the stage that owns it, and each
stage's output is a plain value the next one consumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from cosched.codegen import graph_for_plan, load_plan, lower
from cosched.compiled import CompiledPlan
from cosched.costmodel import CostModel, DeviceSpec
from cosched.costmodel.overheads import RuntimeCosts, measure_runtime_costs
from cosched.costmodel.profiler import standalone_threads
from cosched.costmodel.roofline import RooflineModel
from cosched.costmodel.select import resolve_cost_model
from cosched.errors import ConfigError
from cosched.ir import analyse, fuse, load_models
from cosched.runtime.bindings import random_inputs
from cosched.runtime.measure import schedule_timer
from cosched.search import CostTable, SearchConfig, optimize

__all__ = ["compile", "load"]

log = logging.getLogger(__name__)

ModelSource = Any  # a path (str / Path) or an onnx.ModelProto
Objective = Literal["makespan", "pareto"]


def compile(
    models: Sequence[ModelSource],
    *,
    names: Sequence[str] | None = None,
    device: str = "cpu",
    batch: int | Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
    cost_model: str | Path | CostModel = "auto",
    trials: int = 100,
    time_budget_s: float | None = None,
    seed: int = 0,
    slo_ms: Mapping[str, float] | None = None,
    objective: Objective = "makespan",
    max_streams: int = 4,
    interference_threshold: float = 1.10,
    best_effort: bool = False,
    study: str | None = None,
    profile_budget_s: float = 60.0,
    measure: bool = False,
    progress: bool = False,
) -> CompiledPlan:
    """Compile ``models`` (one per tenant) into a concurrent plan for ``device``.

    ``cost_model`` is ``"auto"`` (the model cached for this device's fingerprint, refitted
    after profiling, within ``profile_budget_s`` seconds, the task signatures of these models
    that its store lacks; with no cache and no budget, the roofline model with a warning; see
    :mod:`cosched.costmodel.select`), ``"roofline"``, a directory written by ``cosched profile``, or a
    :class:`CostModel`. The search runs ``trials`` Optuna trials (or until
    ``time_budget_s``); ``objective="pareto"`` searches makespan against the ``slo_ms``
    objectives with NSGA-II. ``study`` ("sqlite:///FILE.db") persists the study so a later
    call of the same graph, cost model and objective resumes it; a different one starts a
    study of its own in the same file (see :mod:`cosched.search.study`). With ``measure``, the best simulated candidates and the sequential
    baseline are run on the device (random inputs, interleaved) and the fastest measured one
    is kept, so the plan never measures slower than sequential execution. Raises
    :class:`~cosched.errors.SLOError` when an SLO cannot be met, unless ``best_effort``.
    """
    if objective not in ("makespan", "pareto"):
        raise ConfigError(f"objective must be 'makespan' or 'pareto', got {objective!r}")
    started = time.perf_counter()
    spec = DeviceSpec.detect(device)                              # what we compile for
    graph = load_models(models, names=names, batch=batch, input_shapes=input_shapes)
    _check_slo_tenants(slo_ms, graph.tenant_names)                # before any profiling
    graph = analyse(fuse(graph)).verify()                         # tasks, then their costs
    model = resolve_cost_model(cost_model, spec, graph, profile_budget_s, progress)
    runtime = runtime_costs(spec, model)                          # dispatch, waits, threads
    table = CostTable(graph, model, runtime=runtime)              # latencies, cached slowdowns
    config = SearchConfig(
        trials=trials, timeout_s=time_budget_s, seed=seed, max_streams=max_streams,
        threshold=interference_threshold, slo_ms=dict(slo_ms or {}), best_effort=best_effort,
        multi_objective=objective == "pareto", storage=study, progress=progress,
    )
    timer = schedule_timer(graph, spec, random_inputs(graph)) if measure else None
    result = optimize(table, config, timer)                       # search; finalists measured
    predicted = {"plan": result.sim.makespan} | {
        b.name.replace("-", "_"): b.sim.makespan for b in result.baselines
    }
    plan = lower(                                                 # streams, events, buffers
        graph, result.schedule, device=spec, timeline=result.sim,
        latency_critical=tuple((slo_ms or {}).keys()), predicted_ms=predicted,
    )
    seconds = time.perf_counter() - started
    log.info("compiled %d tenants, %d tasks in %.1f s", len(graph.tenants), len(graph.tasks), seconds)
    return CompiledPlan(plan, graph, search=result, cost_model=model.name, compile_s=seconds)


def runtime_costs(spec: DeviceSpec, model: CostModel) -> RuntimeCosts:
    """The device's measured runtime costs, relative to the thread count ``model``'s
    latencies assume: the profiler's standalone threads, or every core for the roofline."""
    base = spec.cores if isinstance(model, RooflineModel) else standalone_threads(spec)
    return measure_runtime_costs(spec, base_threads=base if spec.kind == "cpu" else 1)


def _check_slo_tenants(slo_ms: Mapping[str, float] | None, tenants: Sequence[str]) -> None:
    unknown = sorted(set(slo_ms or {}) - set(tenants))
    if unknown:
        raise ConfigError(f"SLOs name unknown tenant(s) {unknown}; tenants are {list(tenants)}")


def load(directory: str | Path) -> CompiledPlan:
    """A plan directory written by :meth:`CompiledPlan.save`, validated and ready to run."""
    plan = load_plan(directory)
    return CompiledPlan(plan, graph_for_plan(plan), directory=Path(directory))

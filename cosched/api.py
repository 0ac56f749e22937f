"""``cosched.compile()``: the pipeline, one named step a line, and ``cosched.load()``.

Nothing but wiring lives here: each step is a call into the stage that owns it, and each
stage's output is a plain value the next one consumes.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cosched.calibration as calibration
from cosched.codegen import graph_for_plan, load_plan, lower
from cosched.codegen.plan import PROVIDERS
from cosched.compiled import CompiledPlan, check_device
from cosched.costmodel import CostModel, DeviceSpec
from cosched.costmodel.select import resolve_cost_model
from cosched.errors import ConfigError
from cosched.execution.bindings import random_inputs
from cosched.execution.kernels import check_supported
from cosched.execution.ort import available as ort_available
from cosched.ir import analyse, fuse, load_models
from cosched.runtime.memory import check_fits, device_memory
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
    in_situ: bool | None = None,
    provider: str = "auto",
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
    is kept (so in this process it does not measure slower than sequential execution).
    ``in_situ`` (default: on CPU) runs the graph's tasks one after another on the device, at
    one intra-op thread and at every core, and the simulator charges those measured
    latencies instead of the cost model's standalone ones (a few seconds; see
    :mod:`cosched.calibration`). ``provider`` runs the tasks:
    ``"ort"`` (onnxruntime sessions, one per run of tasks on a stream; CPU only,
    :mod:`cosched.execution.ort`), ``"torch"`` (cosched's kernels), or ``"auto"``: onnxruntime
    on CPU where it imports, torch elsewhere. Raises
    :class:`~cosched.errors.SLOError` when an SLO cannot be met, unless ``best_effort``.
    """
    if objective not in ("makespan", "pareto"):
        raise ConfigError(f"objective must be 'makespan' or 'pareto', got {objective!r}")
    _check_options(models=models, device=device, cost_model=cost_model, trials=trials, seed=seed,
                   max_streams=max_streams, time_budget_s=time_budget_s, slo_ms=slo_ms,
                   profile_budget_s=profile_budget_s, interference_threshold=interference_threshold)
    started = time.perf_counter()
    config = SearchConfig(                                        # checked before any work
        trials=trials, timeout_s=time_budget_s, seed=seed, max_streams=max_streams,
        threshold=interference_threshold, slo_ms=dict(slo_ms or {}), best_effort=best_effort,
        multi_objective=objective == "pareto", storage=study, progress=progress,
    )
    spec = DeviceSpec.detect(device)                              # what we compile for
    provider = _provider(provider, spec)                          # who runs the tasks
    graph = load_models(models, names=names, batch=batch, input_shapes=input_shapes)
    check_fits(graph, spec.memory_bytes, f"{spec.kind} ({spec.name})")  # sizes within reason
    check_supported(graph.ops)                                    # a plan that could never run
    _check_slo_tenants(slo_ms, graph.tenant_names)                # before any profiling
    graph = analyse(fuse(graph))                                  # tasks, then their costs (each verifies its result)
    model = resolve_cost_model(cost_model, spec, graph, profile_budget_s, progress)
    runtime = calibration.runtime_costs(spec, model)                          # dispatch, waits, threads
    measured, cuts = calibration.in_situ(graph, spec, in_situ, provider)  # task latencies in context
    table = CostTable(graph, model, runtime=runtime, in_situ=measured, boundaries=cuts)
    timer = calibration.schedule_timer(graph, spec, random_inputs(graph)) if measure else None
    result = optimize(table, config, timer)                       # search; finalists measured
    predicted = {"plan": result.sim.makespan} | {
        b.name.replace("-", "_"): b.sim.makespan for b in result.baselines
    }
    plan = lower(                                                 # streams, events, buffers
        graph, result.schedule, device=spec, timeline=result.sim,
        latency_critical=tuple((slo_ms or {}).keys()), predicted_ms=predicted, provider=provider,
    )
    seconds = time.perf_counter() - started
    log.info("compiled %d tenants, %d tasks in %.1f s", len(graph.tenants), len(graph.tasks), seconds)
    return CompiledPlan(plan, graph, search=result, cost_model=model.name, compile_s=seconds)


def _check_options(*, models: Any, device: Any, cost_model: Any, trials: Any, seed: Any, max_streams: Any,
                   time_budget_s: Any, slo_ms: Any, profile_budget_s: Any, interference_threshold: Any) -> None:
    """Types and ranges of :func:`compile`'s arguments, before any work; errors name the argument."""
    if models is None or isinstance(models, (bytes, Mapping)) or not (
        isinstance(models, (str, os.PathLike, Iterable)) or hasattr(models, "SerializeToString")
    ):
        raise ConfigError(f"models must be ONNX file paths or onnx.ModelProto values, got {models!r}")
    if not isinstance(device, str):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:<i>', got {device!r}")
    if not isinstance(cost_model, (str, os.PathLike, CostModel)):
        raise ConfigError(f"cost_model must be 'auto', 'roofline', a directory or a CostModel, got {cost_model!r}")
    for name, value in (("trials", trials), ("seed", seed), ("max_streams", max_streams)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if time_budget_s is not None and not (_real(time_budget_s) and 0 < time_budget_s < math.inf):
        raise ConfigError(f"time_budget_s must be None or a finite number of seconds > 0, got {time_budget_s!r}")
    if not (_real(profile_budget_s) and 0 <= profile_budget_s < math.inf):
        raise ConfigError(f"profile_budget_s must be a finite number of seconds >= 0, got {profile_budget_s!r}")
    if not (_real(interference_threshold) and interference_threshold >= 1.0):
        raise ConfigError(f"interference_threshold must be a number >= 1.0 (inf lifts it), got "
                          f"{interference_threshold!r}")
    if slo_ms is None:
        return
    if not isinstance(slo_ms, Mapping):
        raise ConfigError(f"slo_ms must map tenant -> milliseconds, got {slo_ms!r}")
    for tenant, ms in slo_ms.items():
        if not (_real(ms) and 0 < ms < math.inf):
            raise ConfigError(f"slo_ms[{tenant!r}] must be a finite number of ms > 0, got {ms!r}")


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def _provider(provider: Any, spec: DeviceSpec) -> str:
    """``provider`` resolved for ``spec`` (see :func:`compile`)."""
    if provider not in ("auto", *PROVIDERS):
        raise ConfigError(f"provider must be 'auto', {', '.join(repr(p) for p in PROVIDERS)}, got {provider!r}")
    if provider == "auto":
        return "ort" if spec.kind == "cpu" and ort_available() else "torch"
    if provider == "ort" and spec.kind != "cpu":
        raise ConfigError(f"provider 'ort' runs tasks on CPU only; this plan is for {spec.kind}")
    if provider == "ort" and not ort_available():
        raise ConfigError("provider 'ort' needs onnxruntime, which does not import here (pip install onnxruntime)")
    return provider


def _check_slo_tenants(slo_ms: Mapping[str, float] | None, tenants: Sequence[str]) -> None:
    unknown = sorted(set(slo_ms or {}) - set(tenants))
    if unknown:
        raise ConfigError(f"SLOs name unknown tenant(s) {unknown}; tenants are {list(tenants)}")


def load(directory: str | Path) -> CompiledPlan:
    """A plan directory written by :meth:`CompiledPlan.save`, validated and ready to run.

    Validated means: plan.json matches its schema and its fields agree with one another
    and with the re-imported models (hashes, bindings, buffers, race-free streams), and
    this machine has the plan's device. Raises :class:`~cosched.errors.PlanError` or
    :class:`~cosched.errors.DeviceError` naming the file and the field.
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise ConfigError(f"load() takes a plan directory path, got {type(directory).__name__} {directory!r}")
    plan = load_plan(directory)
    check_device(plan)
    graph = graph_for_plan(plan)
    index = int(plan.device.get("index", 0))
    check_fits(graph, device_memory(plan.device_kind, index), f"this machine ({plan.device_kind})")
    return CompiledPlan(plan, graph, directory=Path(directory))

"""``cosched.compile()``: the pipeline, one named step a line, and ``cosched.load()``.

Nothing but wiring lives here: each step is a call into the stage that owns it, and each
stage's output is a plain value the next one consumes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cosched.calibration as calibration
from cosched.codegen import Plan, graph_for_plan, load_plan, lower
from cosched.codegen.serving import SetKey, lower_subset, read_serve_file, serve_sets, set_label
from cosched.compiled import CompiledPlan, check_device
from cosched.costmodel import DeviceSpec
from cosched.costmodel.select import resolve_comm_model, resolve_cost_model
from cosched.costmodel.targets import Target, resolve_targets
from cosched.errors import ConfigError
from cosched.execution.bindings import random_inputs
from cosched.execution.kernels import check_supported
from cosched.execution.ort import available as ort_available
from cosched.ir import analyse, fuse, load_models
from cosched.ir.graph import Graph
from cosched.ir.sharding import SplitSpec, apply_splits
from cosched.options import DEFAULTS, CompileOptions
from cosched.runtime.memory import check_fits, device_memory
from cosched.search import CostTable, SearchConfig, optimize
from cosched.search.multidevice import DeviceSearchResult, Variant, optimize_splits
from cosched.search.splitting import forced_split, split_choices
from cosched.search.subsets import search_subset

__all__ = ["compile", "load"]

log = logging.getLogger(__name__)

ModelSource = Any  # a path (str / Path) or an onnx.ModelProto


def compile(models: Sequence[ModelSource], options: CompileOptions | None = None, **overrides: Any) -> CompiledPlan:
    """Compile ``models`` (one per tenant) into a concurrent plan.

    ``options`` (a :class:`~cosched.options.CompileOptions`; by default its defaults) and
    ``overrides``, keyword arguments named as its fields that replace those options
    (``compile(models, device="cuda", trials=200)``), say how: the device, model loading,
    the cost model, the search's budget and objectives, calibration and who runs the tasks.
    Every option is checked before any work; a bad one is a
    :class:`~cosched.errors.ConfigError` naming it, as is an unknown keyword. Raises
    :class:`~cosched.errors.SLOError` when an SLO cannot be met, unless ``best_effort``.
    """
    options = _options(options, overrides)                        # checked before any work
    _check_models(models)
    stages = _StageTimer()                                        # wall time per stage, for the report
    config = options.search_config()                              # the search's own, checked too
    targets = _targets(options)                                   # the devices of a multi-device plan
    spec = targets[0].spec if targets else DeviceSpec.detect(options.device)  # what we compile for
    provider = _provider(options.provider, spec)                  # who runs the tasks
    imported = load_models(models, names=options.names, batch=options.batch, input_shapes=options.input_shapes)
    if not targets:
        check_fits(imported, spec.memory_bytes, f"{spec.kind} ({spec.name})")  # sizes within reason
    check_supported(imported.ops)                                 # a plan that could never run
    _check_slo_tenants(options.slo_ms, imported.tenant_names)     # before any profiling
    stages.lap("import")
    graph = analyse(fuse(imported))                               # tasks, then their costs (each verifies its result)
    stages.lap("analysis")
    model = resolve_cost_model(options.cost_model, spec, graph, options.profile_budget_s, options.progress)
    stages.lap("cost_model")
    runtime = calibration.runtime_costs(spec, model)              # dispatch, waits, threads
    measured, cuts = calibration.in_situ(graph, spec, options.in_situ, provider)  # task latencies in context
    table = CostTable(graph, model, runtime=runtime, in_situ=measured, boundaries=cuts)
    timer = calibration.schedule_timer(graph, spec, random_inputs(graph)) if options.measure else None
    stages.lap("calibration")
    if targets:                                                   # splits, placement, each device's streams
        result = _place(imported, table, targets, options, config)
        graph = result.variant.table.graph
    else:
        result = optimize(table, config, timer)                   # search; finalists measured
    stages.lap("search")
    predicted = {"plan": result.sim.makespan} | {
        b.name.replace("-", "_"): b.sim.makespan for b in result.baselines
    }
    plan = lower(                                                 # streams, events, buffers
        graph, result.schedule, device=spec, timeline=result.sim,
        latency_critical=tuple(options.slo_ms), predicted_ms=predicted, provider=provider,
        **_device_sections(result, targets),
    )
    stages.lap("lowering")
    subsets = _serve_plans(table, config, plan, options, provider) if options.serve else {}
    if options.serve:
        stages.lap("serve_plans")
    log.info("compiled %d tenants, %d tasks in %.1f s (%s)", len(graph.tenants), len(graph.tasks), stages.total,
             ", ".join(f"{name} {s:.1f} s" for name, s in stages.laps.items()))
    return CompiledPlan(plan, graph, search=result, cost_model=model.name, compile_s=stages.total,
                        stages_s=stages.laps, subsets=subsets, serve_slo_ms=options.slo_ms if options.serve else None)


def _serve_plans(table: CostTable, config: SearchConfig, plan: Plan, options: CompileOptions,
                 provider: str) -> dict[SetKey, Plan]:
    """A plan for each set of :func:`~cosched.codegen.serving.serve_sets`, searched as the
    whole mix was (the same costs and search budget; SLOs of the set's tenants, best effort)."""
    sets = serve_sets(plan.tenants)
    plans = {}
    for i, tenants in enumerate(sets, 1):
        found = search_subset(table, tenants, config)
        plans[tenants] = lower_subset(table.graph, found, device=plan.device, import_options=plan.import_options,
                                      latency_critical=options.slo_ms, provider=provider)
        if not found.result.slo_met:
            log.warning("serving set %s: no plan meets its SLOs; kept the best one", set_label(tenants, plan.tenants))
        log.info("serving set %d/%d %s: %d streams, predicted %.2f ms", i, len(sets),
                 set_label(tenants, plan.tenants), len(plans[tenants].streams), found.result.sim.makespan)
    return plans


class _StageTimer:
    """Wall seconds of each stage of :func:`compile`: :meth:`lap` closes the stage since the last."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self.last
        self.last = now

    @property
    def total(self) -> float:
        return self.last - self.started


def _targets(options: CompileOptions) -> tuple[Target, ...]:
    """The devices of a multi-device plan (none for one device)."""
    if not options.devices or len(options.devices) < 2:
        return ()
    if options.measure:
        raise ConfigError("measure times finalists on one device; it is not available with devices (a multi-device "
                          "plan runs on the distributed runtime)")
    if options.objective != "makespan":
        raise ConfigError(f"objective {options.objective!r} is for one device; a multi-device search minimises the "
                          "makespan under the SLOs")
    return resolve_targets(options.devices, options.memory_cap, options.device_spec)


def _place(imported: Graph, table: CostTable, targets: Sequence[Target], options: CompileOptions,
           config: SearchConfig) -> DeviceSearchResult:
    """The multi-device search: tenants that fit no device are split (each choice's graph fused,
    analysed and costed once, its communication priced by the measured model), and splits,
    placement and every device's streams are searched together."""
    caps, names = [t.cap_bytes for t in targets], [t.name for t in targets]
    choices = split_choices(imported, caps, names)
    for tenant, kind in options.splits.items():                   # asked for: the one choice
        choices[tenant] = [forced_split(imported, tenant, kind, len(targets))]
    comm = (resolve_comm_model(options.comm_model, targets[0].spec, len(targets), options.profile_budget_s,
                               options.progress) if choices else None)

    def build(splits: tuple[SplitSpec, ...]) -> Variant:
        if not splits:
            return Variant((), table)
        split = analyse(fuse(apply_splits(imported, splits)))
        latency = {task.id: comm.predict_op_ms(split, split.op(task.ops[0]))  # type: ignore[union-attr]
                   for task in split.tasks if split.op(task.ops[0]).is_comm}
        return Variant(splits, CostTable(split, table.model, runtime=table.runtime), latency)

    return optimize_splits(build, choices, caps, names, config)


def _device_sections(result: Any, targets: Sequence[Target]) -> dict[str, Any]:
    """The devices and splits a multi-device plan records (nothing for one device)."""
    if not targets:
        return {}
    devices = [{"kind": t.spec.kind, "index": t.spec.index, "name": t.name, "memory_bytes": t.spec.memory_bytes,
                "cap_bytes": t.cap_bytes} for t in targets]
    return {"devices": devices, "splits": result.variant.splits}


def _options(options: Any, overrides: Mapping[str, Any]) -> CompileOptions:
    """``options`` (default: the defaults) with ``overrides`` applied: :func:`compile`'s options, built once."""
    if options is not None and not isinstance(options, CompileOptions):
        raise ConfigError(f"options must be a cosched.CompileOptions, got {type(options).__name__} {options!r}")
    return (DEFAULTS if options is None else options).updated(**overrides)


def _check_models(models: Any) -> None:
    if models is None or isinstance(models, (bytes, Mapping)) or not (
        isinstance(models, (str, os.PathLike, Iterable)) or hasattr(models, "SerializeToString")
    ):
        raise ConfigError(f"models must be ONNX file paths or onnx.ModelProto values, got {models!r}")


def _provider(provider: str, spec: DeviceSpec) -> str:
    """``provider`` (checked by :class:`CompileOptions`) resolved for ``spec``."""
    if provider == "auto":
        return "ort" if spec.kind == "cpu" and ort_available() else "torch"
    if provider == "ort" and spec.kind != "cpu":
        raise ConfigError(f"provider 'ort' runs tasks on CPU only; this plan is for {spec.kind}")
    if provider == "ort" and not ort_available():
        raise ConfigError("provider 'ort' needs onnxruntime, which does not import here (pip install onnxruntime)")
    return provider


def _check_slo_tenants(slo_ms: Mapping[str, float], tenants: Sequence[str]) -> None:
    unknown = sorted(set(slo_ms) - set(tenants))
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
    subsets, slo_ms = read_serve_file(plan.base_dir or directory, plan, graph)
    return CompiledPlan(plan, graph, directory=Path(directory), subsets=subsets, serve_slo_ms=slo_ms)

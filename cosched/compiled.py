"""``CompiledPlan``: what ``cosched.compile()`` and ``cosched.load()`` return.

It pairs the plan (plain data) with the graph it runs, and offers running, measuring
against sequential execution, saving, reporting, tracing and the predicted timeline.
Executors are created on first use and reused.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cosched.codegen import Plan, emit_python, save_plan
from cosched.codegen.serving import SERVE_FILE, serve_json, set_label
from cosched.errors import ConfigError, DeviceError, RuntimeFailure
from cosched.execution.bindings import (
    check_finite,
    check_index_inputs,
    random_inputs,
    validate_inputs,
)
from cosched.execution.compare import max_abs_diff, nonfinite_differences
from cosched.ir.graph import Graph
from cosched.runtime.executor import Executor
from cosched.runtime.sequential import SequentialExecutor
from cosched.runtime.timing import time_interleaved

__all__ = ["CompiledPlan", "check_device", "max_abs_diff", "nonfinite_differences", "plan_timeline"]

Inputs = Mapping[str, Mapping[str, Any]]
Outputs = dict[str, dict[str, np.ndarray]]


class CompiledPlan:
    """A plan ready to run. ``search`` is the search result when compiled in this process."""

    def __init__(self, plan: Plan, graph: Graph, *, search: Any = None, cost_model: str = "",
                 compile_s: float | None = None, stages_s: Mapping[str, float] | None = None,
                 directory: Path | None = None, subsets: Mapping[frozenset[str], Plan] | None = None,
                 serve_slo_ms: Mapping[str, float] | None = None) -> None:
        self.plan = plan
        self.graph = graph
        self.search = search
        self.cost_model = cost_model
        self.compile_s = compile_s
        self.stages_s = dict(stages_s or {})
        self.directory = directory
        #: the plans of sets of tenants (``compile(serve=True)``), by set: :meth:`serve`'s plan cache
        self.subsets = dict(subsets or {})
        #: the SLOs the set plans were searched for (None: not compiled to serve)
        self.serve_slo_ms = None if serve_slo_ms is None else dict(serve_slo_ms)
        self.measured: dict[str, Any] = {}
        #: what the last :meth:`run` found non-finite (NaN / inf), one message per tensor
        self.last_warnings: list[str] = []
        #: CUDA plans: run as one captured CUDA graph (set before the first run)
        self.cuda_graph = False
        #: multi-device plans: the longest a rank waits for a peer before the run fails
        self.timeout_s = 60.0
        self._scratch: Any = None
        self._executor: Executor | None = None
        self._baseline: SequentialExecutor | None = None
        self._reference: SequentialExecutor | None = None

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            check_device(self.plan)
            self._executor = Executor(self.plan, self.graph, cuda_graph=self.cuda_graph)
        return self._executor

    @property
    def reference(self) -> SequentialExecutor:
        """Op-by-op execution, nothing traced: what outputs are checked against."""
        if self._reference is None:
            self._reference = SequentialExecutor(self.graph, self.executor.device.type)
        return self._reference

    @property
    def baseline(self) -> SequentialExecutor:
        """Sequential execution of the plan's tasks, run as the plan's executor runs them
        (onnxruntime, traced or op by op): what the plan's speedup is measured against, so
        that the speedup is the schedule's alone."""
        if self._baseline is None:
            ort = any(t.provider == "ort" for t in self.plan.tasks)
            self._baseline = SequentialExecutor(self.graph, self.executor.device.type,
                                                trace_tasks=self.executor.trace_tasks,
                                                provider="ort" if ort else "torch")
        return self._baseline

    @property
    def sequential(self) -> SequentialExecutor:
        """Deprecated name of :attr:`baseline` (beside :attr:`reference` it did not say which)."""
        warnings.warn("CompiledPlan.sequential is deprecated; use .baseline (timing) or .reference "
                      "(outputs)", DeprecationWarning, stacklevel=2)
        return self.baseline

    def inputs(self, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
        """Deterministic random inputs of the right shapes, keyed by tenant then input name."""
        return random_inputs(self.graph, seed)

    def run(self, inputs: Inputs | None = None, *, profile: bool = False, strict: bool = False) -> Outputs:
        """Run the plan once; outputs keyed by tenant, then the model's output names.

        Inputs are checked first (names, shapes, dtypes, index ranges). NaN or inf in an
        input, or in an output of a tenant whose inputs are finite, is logged as a warning
        naming the tenant and tensor; with ``strict`` it raises instead
        (:class:`~cosched.errors.InputError` / :class:`~cosched.errors.RuntimeFailure`).

        A multi-device plan runs on one process per device, started through torch's elastic
        launcher (:mod:`cosched.runtime.launch`) for this one run; a rank that fails ends the
        run within :attr:`timeout_s` with a :class:`~cosched.errors.RuntimeFailure` naming it.
        """
        feed = validate_inputs(self.graph, inputs if inputs is not None else self.inputs())
        check_index_inputs(self.graph, feed)
        nonfinite = check_finite(feed, "input", strict=strict)
        if self.plan.devices:
            if profile:
                raise ConfigError("a multi-device plan is profiled with `cosched run PLAN_DIR --trace FILE`")
            outputs = self._launch(feed, ["--iters", "0", "--warmup", "0"])["outputs"]
            from_outputs = check_finite(outputs, "output", strict=strict, skip=nonfinite)
            self.last_warnings = [m for found in (nonfinite, from_outputs) for ms in found.values() for m in ms]
            return outputs
        try:
            outputs = self.executor.run(feed, profile=profile)
        except RuntimeFailure as exc:
            if "\n" not in str(exc):
                raise
            raise RuntimeFailure(_one_line(str(exc))) from exc
        from_outputs = check_finite(outputs, "output", strict=strict, skip=nonfinite)
        self.last_warnings = [m for found in (nonfinite, from_outputs) for ms in found.values() for m in ms]
        return outputs

    def benchmark(self, inputs: Inputs | None = None, *, iters: int = 20, warmup: int = 3,
                  compare_sequential: bool = True) -> dict[str, Any]:
        """Median ms of the plan and (interleaved, same inputs) of sequential execution,
        and the largest absolute difference between their outputs. Kept for :meth:`report`."""
        feed = inputs if inputs is not None else self.inputs()
        if self.plan.devices:
            return self._benchmark_ranks(feed, iters, warmup, compare_sequential)
        runners = {"plan": lambda: self.executor.run(feed)}
        if compare_sequential:
            runners["sequential"] = lambda: self.baseline.run(feed)
        timings = time_interleaved(runners, iters=iters, warmup=warmup)
        result: dict[str, Any] = {
            "median_ms": {name: t.median for name, t in timings.items()},
            "spread": {name: t.spread for name, t in timings.items()},
            "iters": iters,
        }
        if compare_sequential:
            result["speedup_vs_sequential"] = timings["sequential"].median / timings["plan"].median
            got, want = self.executor.run(feed), self.reference.run(feed)
            result["max_abs_diff"] = max_abs_diff(got, want)
            mismatches = nonfinite_differences(got, want)
            if mismatches:
                result["mismatches"] = mismatches
        self.measured = result
        return result

    def _benchmark_ranks(self, feed: Inputs, iters: int, warmup: int, compare: bool) -> dict[str, Any]:
        """:meth:`benchmark` of a multi-device plan: rounds timed across its ranks (no
        interleaved sequential runs: the ranks own the cores while they run)."""
        args = ["--iters", str(iters), "--warmup", str(warmup)] + (["--compare", "sequential"] if compare else [])
        report = self._launch(feed, args)["report"]
        result = {key: report[key] for key in ("median_ms", "spread", "iters", "comm_share", "ranks",
                                               "max_abs_diff", "max_rel_err", "mismatches") if key in report}
        self.measured = result
        return result

    def _launch(self, feed: Inputs, args: list[str]) -> dict[str, Any]:
        """Run a multi-device plan on its ranks (:func:`cosched.runtime.launch.launch`),
        from its directory (an unsaved plan is saved to a temporary one first)."""
        from cosched.runtime.launch import launch

        if self.directory is None:
            import tempfile

            self._scratch = tempfile.TemporaryDirectory(prefix="cosched-plan-")
            self.save(Path(self._scratch.name) / "plan")
        return launch(self.directory, inputs=feed, args=args, timeout_s=self.timeout_s)

    def save(self, directory: str | Path, *, copy_models: bool = True) -> Path:
        """Write plan.json, plan_module.py, the models (or references) and report.json as
        the directory ``directory``, replacing it whole (see :func:`cosched.codegen.save_plan`)."""
        extra = {"report.json": json.dumps(self.report(), indent=2) + "\n"}
        if self.serve_slo_ms is not None:  # compiled to serve: serve.json (cosched.codegen.serving)
            extra[SERVE_FILE] = serve_json(self.subsets, self.plan.tenants, self.serve_slo_ms or {})
        path = save_plan(self.plan, directory, copy_models=copy_models, module_source=emit_python(self.plan),
                         extra_files=extra, graph=self.graph)
        self.directory = Path(directory)
        return path

    def report(self) -> dict[str, Any]:
        """Predicted ms of the plan and each baseline, sizes, and measurements once taken."""
        report: dict[str, Any] = {
            "tenants": list(self.graph.tenant_names),
            "device": dict(self.plan.device),
            "predicted_ms": dict(self.plan.predicted_ms),
            "tasks": len(self.plan.tasks),
            "streams": len(self.plan.streams),
            "events": len(self.plan.events),
            "schedule_method": self.plan.schedule_method,
        }
        if self.compile_s is not None:
            report["compile_s"] = self.compile_s
        if self.stages_s:
            report["stages_s"] = dict(self.stages_s)
        if self.cost_model:
            report["cost_model"] = self.cost_model
        if self.search is not None:
            report["trials"] = self.search.trials
            if self.search.study_name:
                report["study"] = self.search.study_name
            if self.search.measured_ms:
                report["finalists_measured_ms"] = list(self.search.measured_ms)
            report["slo"] = {t: {"slo_ms": s, "predicted_ms": p} for t, (s, p) in self.search.slo_report.items()}
            report["slo_met"] = self.search.slo_met
            report["interference_violations"] = len(self.search.violations)
            if hasattr(self.search, "caps"):  # a multi-device search: placement, memory, baselines
                report["multi_device"] = self.search.report()
        if self.subsets:
            report["serve"] = {set_label(key, self.plan.tenants): {
                "streams": len(plan.streams), "predicted_ms": plan.predicted_ms.get("plan")}
                for key, plan in sorted(self.subsets.items(), key=lambda kv: (len(kv[0]), sorted(kv[0])))}
        if self.measured:
            report["measured"] = self.measured
        return report

    def trace(self, path: str | Path, inputs: Inputs | None = None) -> Path:
        """Run once with per-task timing and write a Chrome trace (open it in Perfetto)."""
        self.run(inputs, profile=True)
        return self.executor.write_trace(path)

    def write_profile(self, store: str | Path, inputs: Inputs | None = None, runs: int = 5) -> Any:
        """Profile ``runs`` runs of the plan and append what they measured to the profile
        store at ``store`` (see :mod:`cosched.costmodel.writeback`), so a cost model refit on
        it learns from real plan executions. Returns the records written."""
        from cosched.costmodel import DeviceSpec, ProfileStore
        from cosched.costmodel.writeback import write_back
        from cosched.ir import analyse

        timings = []
        for _ in range(runs):
            self.run(inputs, profile=True)
            timings.append(self.executor.last_timings)
        threads = getattr(self.executor.backend, "threads_per_stream", 0)
        per_stream = {s.id: threads for s in self.plan.streams}
        device = DeviceSpec.detect(self.executor.device.type)
        with ProfileStore(store) as opened:
            return write_back(opened, device, analyse(self.graph), timings, per_stream)

    def serve(self, *, slo_ms: Mapping[str, float] | None = None, queue_size: int = 64, priorities: bool = True,
              lanes: int | None = None, warm: bool = True) -> Any:
        """A server of this plan (:class:`cosched.runtime.serve.Server`): ``submit(tenant,
        inputs) -> Future``, ``stats()``, ``close()``. Each dispatch runs the plan of the set
        of tenants with requests waiting, from this plan's cache (``compile(serve=True)``), or
        composed from this plan's schedule when the set has none (:mod:`cosched.runtime.plancache`).

        ``slo_ms`` (tenant -> ms) are the latency objectives the server reports attainment of
        and orders dispatches by; by default those the plan was compiled with. ``queue_size``
        bounds each tenant's waiting requests; ``priorities`` turns the SLO rule on;
        ``lanes`` is how many dispatches (of distinct tenants) may run at once, sharing the
        device's cores (default :func:`~cosched.runtime.plancache.default_lanes`: two on a
        CPU of two or more cores, else one); ``warm`` builds (and runs once) every cached plan's executor before
        serving, at each share of the device, so the first requests do not pay for it."""
        from cosched.runtime.plancache import PlanCache, default_lanes
        from cosched.runtime.serve import Server

        if self.plan.devices:
            raise ConfigError(f"serve() runs one-device plans; this plan runs on {len(self.plan.devices)} devices")
        check_device(self.plan)
        slos = dict(slo_ms if slo_ms is not None else (self.serve_slo_ms or self._search_slos()))
        cache = PlanCache(self.plan, self.graph, self.subsets, slo_ms=slos)
        lanes = default_lanes(self.plan) if lanes is None else lanes
        server = Server(cache, queue_size=queue_size, priorities=priorities, lanes=lanes)  # checks the options
        if warm:
            try:
                cache.warm(lanes)
            except BaseException:
                server.close()
                raise
        return server

    def _search_slos(self) -> dict[str, float]:
        report = getattr(self.search, "slo_report", None) or {}
        return {t: slo for t, (slo, _) in report.items()}

    def timeline(self) -> list[dict[str, Any]]:
        """The predicted timeline: one row per task with tenant, stream and times in ms."""
        return plan_timeline(self.plan)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
            self.directory = None


def check_device(plan: Plan) -> None:
    """Raise :class:`DeviceError` unless this machine has the device the plan was compiled for."""
    if plan.device_kind != "cuda":
        return
    import torch

    index = int(plan.device.get("index", 0))
    name = plan.device.get("name", "?")
    label = f"plan {plan.base_dir}" if plan.base_dir else "the plan"
    if not torch.cuda.is_available():
        raise DeviceError(
            f"{label} was compiled for cuda:{index} ({name}), but torch here "
            f"({torch.__version__}) has no CUDA device; run it on a GPU machine or recompile with --device cpu"
        )
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"{label} was compiled for cuda:{index} ({name}), but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )


def plan_timeline(plan: Plan) -> list[dict[str, Any]]:
    """A plan's predicted timeline (no graph needed): one row per task, by stream then start."""
    stream_of = plan.stream_of_task()
    rows = []
    for task in plan.tasks:
        start, end = plan.timeline.get(task.id, (float("nan"), float("nan")))
        rows.append({"task": task.id, "name": task.name, "tenant": task.tenant,
                     "stream": stream_of[task.id], "start_ms": start, "end_ms": end})
    return sorted(rows, key=lambda r: (r["stream"], r["start_ms"]))


def _one_line(message: str) -> str:
    """A failure message that carries a (TorchScript) traceback, as its first line and the
    error at its end: what a user needs, without the interpreter's stack."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    head = lines[0].replace("The following operation failed in the TorchScript interpreter.", "").rstrip(": ")
    if len(lines) == 1:
        return head
    before, _, kind = head.rpartition(": ")
    if before and lines[-1].startswith(f"{kind}:"):
        head = before  # the error's type is repeated on its last line
    return f"{head}: {lines[-1]}"

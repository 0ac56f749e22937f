"""Running a plan: one :class:`Executor` interface over interchangeable backends.

The executor re-imports the graph when none is given, proves the plan race-free
(:func:`cosched.codegen.verify.verify_plan`), resolves every op once, loads the weights
once, and hands each run an environment (constants plus bound inputs) to a
:class:`Backend`, which executes the plan's streams and leaves the outputs in it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosched.codegen.plan import Plan
from cosched.codegen.rebuild import graph_for_plan
from cosched.codegen.verify import verify_plan
from cosched.errors import ConfigError, DeviceError
from cosched.execution.bindings import bind_inputs, collect_outputs
from cosched.execution.kernels import device_only, host_values, load_constants
from cosched.execution.malloc import keep_freed_memory, release_freed_memory
from cosched.execution.sharing import root
from cosched.execution.traced import TaskTracer, shared_constants
from cosched.ir.graph import Graph
from cosched.runtime.chrome_trace import TaskTiming, write_trace
from cosched.runtime.program import Backend, PlanProgram, TaskProgram, build_programs, plan_program

__all__ = ["Backend", "Executor", "ProfileHook", "TaskProgram", "default_threads"]

#: Called after a profiled run with the measured timings and the plan (profile write-back).
ProfileHook = Callable[[Sequence[TaskTiming], Plan], None]


class Executor:
    """Runs a plan: ``Executor(plan).run(inputs) -> outputs`` (keyed by tenant, then model names).

    ``graph`` skips re-importing the models (it must hold the plan's tasks). ``backend`` is
    ``"auto"`` (the plan's device kind), ``"cpu"`` or ``"cuda"``. CPU options:
    ``threads_per_stream`` (default ``max(1, cores // streams)``), ``wait_timeout_s`` and a
    test hook ``delay(task_id) -> seconds`` slept before each task, and ``tune_malloc``
    (default on: keep freed memory for reuse, :mod:`cosched.execution.malloc`, but hand back
    what building the executor freed). CUDA option:
    ``cuda_graph`` captures the whole plan once and replays it. ``trace_tasks`` runs each
    task as one TorchScript call where it can be traced (:mod:`cosched.execution.traced`;
    default: on CPU, where op-by-op dispatch makes worker threads take turns on the GIL, and
    off on CUDA); ``tracer`` then says how many tasks were traced. ``on_profile`` receives
    the timings of every profiled run. Tasks run on the provider the plan gives them
    (:mod:`cosched.execution.ort` for ``"ort"``); ``providers="torch"`` runs every task on
    cosched's torch kernels instead, and ``providers`` (the attribute) says who ran each task.
    """

    def __init__(
        self,
        plan: Plan,
        graph: Graph | None = None,
        *,
        backend: str = "auto",
        threads_per_stream: int | None = None,
        wait_timeout_s: float = 300.0,
        delay: Callable[[int], float] | None = None,
        cuda_graph: bool = False,
        trace_tasks: bool | None = None,
        on_profile: ProfileHook | None = None,
        tune_malloc: bool = True,
        providers: str | None = None,
    ) -> None:
        devices = sorted({s.device for s in plan.streams})
        if plan.devices or len(devices) != 1:
            labels = [d.label for d in plan.devices] or devices
            raise DeviceError(
                f"the plan runs on {len(labels)} devices ({', '.join(map(str, labels))}); a multi-device plan "
                "needs the distributed runtime (one process per device), and Executor runs one-device plans only"
            )
        self.plan: Plan | None = plan
        self.graph = graph if graph is not None else graph_for_plan(plan)
        verify_plan(plan, self.graph)
        kind = plan.device_kind if backend == "auto" else backend
        index = int(plan.device.get("index", 0))
        self._start(plan_program(plan), kind, index, threads_per_stream=threads_per_stream,
                    wait_timeout_s=wait_timeout_s, delay=delay, cuda_graph=cuda_graph,
                    trace_tasks=trace_tasks, on_profile=on_profile, tune_malloc=tune_malloc,
                    providers=providers)

    @classmethod
    def for_program(cls, graph: Graph, program: PlanProgram, device: str | torch.device = "cpu",
                    **options: Any) -> Executor:
        """An executor of ``program`` over ``graph`` without a plan value: how a generated
        module (:mod:`cosched.codegen.emit`) runs its stream functions. ``options`` are
        ``__init__``'s keyword options."""
        self = cls.__new__(cls)
        self.plan = None
        self.graph = graph
        where = torch.device(device)
        self._start(program, where.type, where.index or 0, **options)
        return self

    def _start(self, program: PlanProgram, kind: str, index: int, *, threads_per_stream: int | None = None,
               wait_timeout_s: float = 300.0, delay: Callable[[int], float] | None = None,
               cuda_graph: bool = False, trace_tasks: bool | None = None,
               on_profile: ProfileHook | None = None, tune_malloc: bool = True,
               providers: str | None = None) -> None:
        if providers not in (None, "torch"):
            raise ConfigError(f"providers must be None (the plan's) or 'torch', got {providers!r}")
        self.on_profile = on_profile
        self.last_timings: tuple[TaskTiming, ...] = ()
        if kind == "cpu":
            self.device = torch.device("cpu")
            if tune_malloc:  # runs reuse freed memory instead of page-faulting it back in
                keep_freed_memory()
        elif kind == "cuda":
            self.device = torch.device("cuda", index)
        else:
            raise ConfigError(f"backend {kind!r} is not one of 'auto', 'cpu', 'cuda'")
        if program.segments and providers is None and kind != "cpu":
            raise ConfigError(f"the plan runs tasks on onnxruntime, which cosched uses on CPU only, "
                              f"not on {kind}; compile the plan for this device")
        self.trace_tasks = kind == "cpu" if trace_tasks is None else trace_tasks
        self.tracer = TaskTracer(self.device) if self.trace_tasks else None
        if kind == "cuda":  # fails clearly before any weight is loaded where CUDA is missing
            from cosched.runtime.cuda import TorchCuda

            api = TorchCuda(self.device, program.priorities, program.num_events)
        # traces hold the weights they read: tracing executors of one graph share one copy,
        # as do executors of a graph cut from another (a server's plans, one per active set)
        shared = self.trace_tasks or root(self.graph) is not self.graph
        constants = shared_constants(self.graph, self.device) if shared else load_constants(self.graph, self.device)
        host = host_values(self.graph.ops, constants)
        outputs = [n for t in self.graph.tenants for _, n in t.outputs]
        # shape constants stay on the host: no device copy, nothing to read back
        self.constants = device_only(self.graph.ops, constants, keep=outputs) if kind == "cuda" else constants
        threads = threads_per_stream or default_threads(len(program.streams))
        self.segments = program.segments if providers is None else ()
        tasks = build_programs(self.graph, self.tracer, host=host, device=self.device,
                               segments=self.segments, threads=threads, constants=constants)
        self.providers = {t.id: t.provider for t in tasks.values()}
        if kind == "cpu":
            from cosched.runtime.cpu import CpuBackend

            self.backend: Backend = CpuBackend(
                program, tasks, threads_per_stream=threads, wait_timeout_s=wait_timeout_s, delay=delay,
            )
        else:
            from cosched.runtime.cuda import CudaBackend

            inputs = tuple(n for t in self.graph.tenants for _, n in t.inputs)
            self.backend = CudaBackend(program, tasks, self.device, input_names=inputs,
                                       output_names=tuple(outputs), cuda_graph=cuda_graph, api=api)
        if tune_malloc:  # what building freed (weights read, traces' example runs) is not kept
            release_freed_memory()

    def run(self, inputs: Mapping[str, Mapping[str, Any]], *, profile: bool = False
            ) -> dict[str, dict[str, np.ndarray]]:
        env: dict[str, torch.Tensor] = dict(self.constants)
        env.update(bind_inputs(self.graph, inputs, self.device))
        timings = self.backend.execute(env, profile)
        outputs = collect_outputs(self.graph, env)
        if profile:
            self.last_timings = timings
            if self.on_profile is not None and self.plan is not None:
                self.on_profile(timings, self.plan)
        return outputs

    def write_trace(self, path: str | Path) -> Path:
        """Chrome trace of the last profiled run (plus the predicted timeline)."""
        if not self.last_timings:
            raise ConfigError("no profiled run yet: call run(inputs, profile=True) before write_trace")
        return write_trace(path, self.last_timings, self.plan)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()


def default_threads(streams: int) -> int:
    """Intra-op threads per stream worker: the cores shared evenly, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, streams))

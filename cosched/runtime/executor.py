"""Running a plan: one :class:`Executor` interface over interchangeable backends.

The executor re-imports the graph when none is given, proves the plan race-free
(:func:`cosched.codegen.verify.verify_plan`), resolves every op once, loads the weights
once, and hands each run an environment (constants plus bound inputs) to a
:class:`Backend`, which executes the plan's streams and leaves the outputs in it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosched.codegen.plan import Plan
from cosched.codegen.rebuild import graph_for_plan
from cosched.codegen.verify import verify_plan
from cosched.errors import ConfigError, CoschedError, DeviceError, RuntimeFailure
from cosched.ir.graph import Graph
from cosched.runtime.bindings import bind_inputs, collect_outputs
from cosched.runtime.kernels import Kernel, load_constants, prepare_kernels
from cosched.runtime.trace import TaskTiming, write_trace
from cosched.runtime.traced import TaskTracer, TracedTask, shared_constants

__all__ = ["Backend", "Executor", "ProfileHook", "TaskProgram", "build_programs"]

#: Called after a profiled run with the measured timings and the plan (profile write-back).
ProfileHook = Callable[[Sequence[TaskTiming], Plan], None]


@dataclass(frozen=True)
class TaskProgram:
    """One task ready to run: its kernels in order (or their trace, see
    :mod:`cosched.runtime.traced`), and the tensors dead after it."""

    id: int
    name: str
    tenant: str
    stream: int
    kernels: tuple[Kernel, ...]
    frees: tuple[str, ...]
    traced: TracedTask | None = None

    @property
    def label(self) -> str:
        return f"task {self.id} ({self.tenant}:{self.name})"

    def __call__(self, env: MutableMapping[str, torch.Tensor]) -> None:
        try:
            if self.traced is not None:
                self.traced(env)
            else:
                for kernel in self.kernels:
                    kernel(env)
        except CoschedError as exc:
            raise RuntimeFailure(f"{self.label} on stream {self.stream} failed: {exc}") from exc
        except Exception as exc:
            raise RuntimeFailure(
                f"{self.label} on stream {self.stream} failed: {type(exc).__name__}: {exc}"
            ) from exc


def build_programs(plan: Plan, graph: Graph, tracer: TaskTracer | None = None) -> dict[int, TaskProgram]:
    """Resolve every op once; one :class:`TaskProgram` per task id. With ``tracer``, each
    task that can be traced runs as one call."""
    kernels = {k.op.name: k for k in prepare_kernels(graph.ops)}
    stream_of = plan.stream_of_task()
    frees: dict[int, list[str]] = {}
    for b in plan.buffers:
        if b.free_after is not None:
            frees.setdefault(b.free_after, []).append(b.tensor)
    programs = {}
    for t in plan.tasks:
        ks = tuple(kernels[name] for name in t.ops)
        traced = tracer.trace(graph, graph.task(t.id), ks) if tracer is not None else None
        programs[t.id] = TaskProgram(t.id, t.name or t.ops[0], t.tenant, stream_of[t.id], ks,
                                     tuple(frees.get(t.id, ())), traced)
    return programs


class Backend(ABC):
    """Executes a plan's streams over an environment of tensors; one implementation per device kind.

    ``execute`` runs every task once, leaving graph outputs in ``env``; with ``profile`` it
    returns per-task timings (microseconds from the start of the run), else an empty tuple.
    Any failure raises :class:`RuntimeFailure` naming the task; a backend never hangs.
    """

    name: str = "abstract"

    @abstractmethod
    def execute(self, env: dict[str, torch.Tensor], profile: bool = False) -> tuple[TaskTiming, ...]:
        """Run the plan once over ``env``."""

    @abstractmethod
    def close(self) -> None:
        """Release threads, streams and graphs (idempotent)."""


class Executor:
    """Runs a plan: ``Executor(plan).run(inputs) -> outputs`` (keyed by tenant, then model names).

    ``graph`` skips re-importing the models (it must hold the plan's tasks). ``backend`` is
    ``"auto"`` (the plan's device kind), ``"cpu"`` or ``"cuda"``. CPU options:
    ``threads_per_stream`` (default ``max(1, cores // streams)``), ``wait_timeout_s`` and a
    test hook ``delay(task_id) -> seconds`` slept before each task. CUDA option:
    ``cuda_graph`` captures the whole plan once and replays it. ``trace_tasks`` runs each
    task as one TorchScript call where it can be traced (:mod:`cosched.runtime.traced`;
    default: on CPU, where op-by-op dispatch makes worker threads take turns on the GIL, and
    off on CUDA); ``tracer`` then says how many tasks were traced. ``on_profile`` receives
    the timings of every profiled run.
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
    ) -> None:
        self.plan = plan
        self.graph = graph if graph is not None else graph_for_plan(plan)
        verify_plan(plan, self.graph)
        kind = plan.device_kind if backend == "auto" else backend
        devices = sorted({s.device for s in plan.streams})
        if len(devices) != 1:
            raise DeviceError(
                f"plan spans devices {devices}; multi-device plans run under the distributed runner"
            )
        self.on_profile = on_profile
        self.last_timings: tuple[TaskTiming, ...] = ()
        if kind == "cpu":
            self.device = torch.device("cpu")
        elif kind == "cuda":
            self.device = torch.device("cuda", int(plan.device.get("index", 0)))
        else:
            raise ConfigError(f"backend {backend!r} is not one of 'auto', 'cpu', 'cuda'")
        self.trace_tasks = kind == "cpu" if trace_tasks is None else trace_tasks
        self.tracer = TaskTracer(self.device) if self.trace_tasks else None
        # traces hold the weights they read: tracing executors of one graph share one copy
        self.constants = (shared_constants(self.graph, self.device) if self.trace_tasks
                          else load_constants(self.graph, self.device))
        programs = build_programs(plan, self.graph, self.tracer)
        if kind == "cpu":
            from cosched.runtime.cpu import CpuBackend

            self.backend: Backend = CpuBackend(
                plan, programs, threads_per_stream=threads_per_stream or default_threads(len(plan.streams)),
                wait_timeout_s=wait_timeout_s, delay=delay,
            )
        else:
            from cosched.runtime.cuda import CudaBackend

            self.backend = CudaBackend(plan, programs, self.device, cuda_graph=cuda_graph)

    def run(self, inputs: Mapping[str, Mapping[str, Any]], *, profile: bool = False
            ) -> dict[str, dict[str, np.ndarray]]:
        env: dict[str, torch.Tensor] = dict(self.constants)
        env.update(bind_inputs(self.graph, inputs, self.device))
        timings = self.backend.execute(env, profile)
        outputs = collect_outputs(self.graph, env)
        if profile:
            self.last_timings = timings
            if self.on_profile is not None:
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

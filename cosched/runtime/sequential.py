"""Sequential execution: every op of every tenant, one after another, in graph order.

By default (op by op, no tracing) this is the reference every plan's outputs are checked
against. With ``trace_tasks`` it is the "sequential" baseline that plans are timed against:
the graph's tasks run one after another in dependency order (ties by task id), each as one
TorchScript call where it can be traced (:mod:`cosched.execution.traced`), as the plan's
executor runs them, so that a plan's speedup over it comes from scheduling alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import networkx as nx
import numpy as np
import torch

from cosched.errors import ConfigError
from cosched.execution.bindings import bind_inputs, collect_outputs
from cosched.execution.kernels import (
    Kernel,
    device_only,
    host_values,
    load_constants,
    prepare_kernels,
)
from cosched.execution.malloc import keep_freed_memory, release_freed_memory
from cosched.execution.traced import TaskTracer, shared_constants
from cosched.ir.graph import Graph, Op

__all__ = ["SequentialExecutor", "last_uses"]


class SequentialExecutor:
    """Runs a merged graph op by op (or task by task, traced, with ``trace_tasks``; the graph
    must then be fused into tasks). Weights are loaded once, at construction.

    ``run`` takes inputs keyed by tenant, then by the model's own input names, and returns
    outputs keyed the same way. Intermediate tensors are freed after their last use. With
    ``provider="ort"`` each tenant runs as one onnxruntime session with ``threads`` intra-op
    threads (default: every core), as a one-stream plan with that provider runs it.
    """

    def __init__(self, graph: Graph, device: str = "cpu", *, trace_tasks: bool = False,
                 tune_malloc: bool = True, provider: str = "torch", threads: int | None = None) -> None:
        self.graph = graph
        self.device = torch.device(device)
        if tune_malloc and self.device.type == "cpu":  # see cosched.execution.malloc
            keep_freed_memory()
        constants = shared_constants(graph, self.device) if trace_tasks else load_constants(graph, self.device)
        self.kernels = prepare_kernels(graph.ops, host=host_values(graph.ops, constants), device=self.device)
        outputs = [n for t in graph.tenants for _, n in t.outputs]
        # shape constants stay on the host on a GPU (see cosched.execution.kernels)
        self.constants = (device_only(graph.ops, constants, keep=outputs) if self.device.type == "cuda"
                          else constants)
        self._last_use = last_uses(graph)
        self._step_tenants = [op.tenant for op in graph.ops]
        #: with ``run(profile=True)``: (tenant, start_ms, end_ms) of each run of one tenant's steps
        self.last_timeline: list[tuple[str, float, float]] = []
        self.tracer: TaskTracer | None = None
        self._steps: list[Callable[[dict[str, torch.Tensor]], None]] | None = None  # None: op by op
        if trace_tasks:
            if not graph.tasks:
                raise ConfigError("trace_tasks needs a graph fused into tasks; run cosched.ir.fusion.fuse first")
            self.tracer = TaskTracer(self.device)
            by_name = {k.op.name: k for k in self.kernels}
            order = [graph.task(i) for i in nx.lexicographical_topological_sort(graph.to_networkx("task"))]
            self._steps = []
            self._step_tenants = [t.tenant for t in order]
            for task in order:
                kernels = [by_name[name] for name in task.ops]
                traced = self.tracer.trace(graph, task, kernels)
                self._steps.append(traced if traced is not None else _Ops(kernels))
            self._last_use = last_uses(graph, [[graph.op(n) for n in t.ops] for t in order])
        if provider == "ort":
            self._use_ort(threads)
        elif provider != "torch":
            raise ConfigError(f"provider must be 'torch' or 'ort', got {provider!r}")
        if tune_malloc:  # what building freed (weights read, traces' example runs) is not kept
            release_freed_memory()

    def _use_ort(self, threads: int | None) -> None:
        """Each tenant's tasks, in order, as one onnxruntime session (:mod:`cosched.execution.ort`)."""
        from cosched.execution.ort import build_segment
        from cosched.runtime.executor import default_threads

        if self.device.type != "cpu":
            raise ConfigError(f"provider 'ort' runs on CPU only, not on {self.device}")
        if not self.graph.tasks:
            raise ConfigError("provider 'ort' needs a graph fused into tasks; run cosched.ir.fusion.fuse first")
        order = list(nx.lexicographical_topological_sort(self.graph.to_networkx("task")))
        n = threads or default_threads(1)
        self._steps = [build_segment(self.graph, [t for t in order if self.graph.task(t).tenant == tenant],
                                     n, self.constants) for tenant in self.graph.tenant_names]
        self._step_tenants = list(self.graph.tenant_names)
        self._last_use = {}  # a segment keeps its intermediates to itself

    def run(self, inputs: Mapping[str, Mapping[str, Any]], *, profile: bool = False
            ) -> dict[str, dict[str, np.ndarray]]:
        """Outputs of one run; with ``profile``, :attr:`last_timeline` holds when each tenant ran."""
        env: dict[str, torch.Tensor] = dict(self.constants)
        env.update(bind_inputs(self.graph, inputs, self.device))
        keep = set(self.constants) | {n for t in self.graph.tenants for _, n in t.outputs}
        timeline: list[tuple[str, float, float]] = []
        start = time.perf_counter_ns()
        with torch.inference_mode():
            for index, step in enumerate(self._steps if self._steps is not None else self.kernels):
                begin = time.perf_counter_ns() if profile else 0
                step(env)
                if profile:
                    _extend(timeline, self._step_tenants[index], (begin - start) / 1e6,
                            (time.perf_counter_ns() - start) / 1e6)
                for name in self._last_use.get(index, ()):
                    if name not in keep:
                        env.pop(name, None)
        if profile:
            self.last_timeline = timeline
        return collect_outputs(self.graph, env)


def _extend(timeline: list[tuple[str, float, float]], tenant: str, begin: float, end: float) -> None:
    """Append a step to ``timeline``, merged into the last entry when it is the same tenant's."""
    if timeline and timeline[-1][0] == tenant:
        timeline[-1] = (tenant, timeline[-1][1], end)
    else:
        timeline.append((tenant, begin, end))


class _Ops:
    """A task left op by op: its kernels in order."""

    def __init__(self, kernels: list[Kernel]) -> None:
        self.kernels = kernels

    def __call__(self, env: dict[str, torch.Tensor]) -> None:
        for kernel in self.kernels:
            kernel(env)


def last_uses(graph: Graph, steps: list[list[Op]] | None = None) -> dict[int, list[str]]:
    """For each step index (an op, or a list of ops in ``steps``), the tensors whose last
    reader is that step."""
    last: dict[str, int] = {}
    for index, ops in enumerate(steps if steps is not None else [[op] for op in graph.ops]):
        for op in ops:
            for name in op.inputs:
                if name:
                    last[name] = index
    by_index: dict[int, list[str]] = {}
    for name, index in last.items():
        by_index.setdefault(index, []).append(name)
    return by_index

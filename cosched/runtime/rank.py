"""One rank of a multi-device plan: its tasks, its weight shard, its streams and its communication.

:class:`RankExecutor` is what :class:`cosched.runtime.executor.Executor` is for a one-device
plan, for the device of one rank, in a process of its own that has joined the
torch.distributed group (:mod:`cosched.runtime.distributed` starts it):

- its graph is the plan's graph cut to the rank's tasks, its weights only those of its
  safetensors shard (memory-mapped: pages are read as kernels touch them) plus the folded
  constants its ops read;
- its streams run on the CPU backend (worker threads) or the CUDA backend (streams issued
  from one thread), with the plan's own steps renumbered for the rank
  (:func:`cosched.runtime.comm.rank_program`);
- its communication tasks run on torch.distributed in the one order every rank keeps
  (:mod:`cosched.runtime.comm`).

``run(inputs)`` returns the tenant outputs that live on this rank. Timings carry the plan's
stream ids and the rank as device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from cosched.codegen.plan import Plan, shard_path
from cosched.codegen.rebuild import graph_for_plan
from cosched.errors import ConfigError, PlanError
from cosched.execution.bindings import bind_inputs, to_numpy
from cosched.execution.kernels import device_only, host_values
from cosched.execution.malloc import keep_freed_memory, release_freed_memory
from cosched.execution.traced import TaskTracer, provide_constants
from cosched.ir.graph import Graph
from cosched.runtime.chrome_trace import TaskTiming
from cosched.runtime.comm import CpuComm, CudaComm, RunStep, comm_steps, rank_program
from cosched.runtime.executor import default_threads
from cosched.runtime.program import Backend, TaskProgram, build_programs

__all__ = ["RankExecutor", "load_shard"]


def load_shard(plan: Plan, rank: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The weights of device ``rank``, read from its safetensors shard alone (memory-mapped
    on CPU); :class:`PlanError` if the shard cannot be read or holds other tensors than the
    plan lists (its sha256 was checked when the plan was loaded)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    entry = plan.devices[rank]
    if not entry.weights:
        return {}
    path = shard_path(plan, rank)
    try:
        values = load_file(str(path), device=str(device))
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise PlanError(f"device {entry.label}: weight shard {path} cannot be read ({exc})") from None
    want = {w.tensor: w for w in entry.weights}
    if set(values) != set(want):
        missing = sorted(set(want) - set(values))[:3]
        raise PlanError(f"device {entry.label}: weight shard {path} lacks {missing} or holds tensors the plan "
                        "does not list; recompile the plan")
    for name, value in values.items():
        if tuple(value.shape) != tuple(want[name].shape):
            raise PlanError(f"device {entry.label}: weight {name!r} in {path} is {list(value.shape)}, the plan "
                            f"says {list(want[name].shape)}")
    return values


def rank_graph(graph: Graph, tasks: set[int]) -> Graph:
    """``graph`` cut to ``tasks``; tensors and tenants stay whole. Every communication op
    stays too, outside any task: a tensor another device receives is then still an output
    of the task producing it here (a traced task writes only its outputs)."""
    keep = [t for t in graph.tasks if t.id in tasks]
    names = {name for t in keep for name in t.ops}
    return graph.replace(ops=tuple(op for op in graph.ops if op.name in names or op.is_comm), tasks=tuple(keep))


class RankExecutor:
    """Runs device ``rank``'s part of a multi-device plan (see the module docstring).

    ``run_step`` does one communication step (:meth:`cosched.runtime.transport.TorchTransport.run`
    in a distributed process), ``finish()`` waits for what a round's steps posted
    (:meth:`~cosched.runtime.transport.TorchTransport.finish`). ``timeout_s`` bounds every wait: for a peer, for an input,
    for another stream. ``on_task(stream, task)`` is called before each task on CPU (the
    run's progress, for error reports).
    """

    def __init__(self, plan: Plan, rank: int, run_step: RunStep, *, graph: Graph | None = None,
                 timeout_s: float = 60.0, trace_tasks: bool | None = None,
                 threads_per_stream: int | None = None,
                 on_task: Callable[[int, int], None] | None = None,
                 finish: Callable[[], None] | None = None) -> None:
        if not 0 <= rank < len(plan.devices):
            raise ConfigError(f"the plan has devices of ranks 0..{len(plan.devices) - 1}, not rank {rank}")
        self.plan, self.rank = plan, rank
        entry = plan.devices[rank]
        self.device = torch.device("cpu") if entry.kind == "cpu" else torch.device("cuda", entry.index)
        self.graph = graph if graph is not None else graph_for_plan(plan)
        self.steps = comm_steps(plan, self.graph, rank)
        comm_tasks = {s.task for s in self.steps if s.kind != "send"}
        device_of = plan.device_of_task()
        mine = {t for t, d in device_of.items() if d == rank}
        self.local = rank_graph(self.graph, mine - comm_tasks)
        program, self.stream_ids = rank_program(plan, rank, self.steps)
        if self.device.type == "cpu":
            keep_freed_memory()
        weights = load_shard(plan, rank, self.device)
        read = {n for op in self.local.ops for n in op.inputs}
        folded = {n: torch.from_numpy(np.array(v, copy=True)).to(self.device)
                  for n, v in self.graph.constants.items() if n in read}
        constants = {**folded, **weights}
        self.trace_tasks = self.device.type == "cpu" if trace_tasks is None else trace_tasks
        tracer = None
        if self.trace_tasks:
            provide_constants(self.local, self.device, constants)
            tracer = TaskTracer(self.device)
        threads = threads_per_stream or default_threads(len(program.streams))
        tasks: dict[int, TaskProgram] = build_programs(
            self.local, tracer, host=host_values(self.local.ops, constants), device=self.device,
            segments=program.segments, threads=threads, constants=constants)
        for t in comm_tasks:
            spec = self.graph.task(t)
            tasks[t] = TaskProgram(t, spec.name or spec.ops[0], spec.tenant, ())
        self.tasks = tasks
        outputs = [n for t in self.graph.tenants for _, n in t.outputs]
        self.constants = (device_only(self.local.ops, constants, keep=outputs) if self.device.type == "cuda"
                          else constants)
        self.backend: Backend
        if self.device.type == "cpu":
            from cosched.runtime.cpu import CpuBackend

            self.comm: Any = CpuComm(self.steps, run_step, timeout_s=timeout_s, finish=finish)
            self.backend = CpuBackend(program, tasks, threads_per_stream=threads, wait_timeout_s=timeout_s,
                                      comm=self.comm, on_task=on_task)
        else:
            from cosched.runtime.cuda import CudaBackend, TorchCuda

            api = TorchCuda(self.device, program.priorities, program.num_events)
            self.comm = CudaComm(self.steps, run_step, self.device)
            inputs = tuple(n for t in self.graph.tenants for _, n in t.inputs)
            self.backend = CudaBackend(program, tasks, self.device, input_names=inputs,
                                       output_names=tuple(outputs), api=api, comm=self.comm)
        self.last_timings: tuple[TaskTiming, ...] = ()
        # what building freed (the traces' example runs) is not kept (cosched.execution.malloc)
        release_freed_memory()

    def run(self, inputs: Mapping[str, Mapping[str, Any]], *, profile: bool = False
            ) -> dict[str, dict[str, np.ndarray]]:
        """Run the rank's part once (every rank must run, in step); the tenant outputs that
        live here, keyed by tenant then the model's output names."""
        env: dict[str, torch.Tensor] = dict(self.constants)
        env.update(bind_inputs(self.graph, inputs, self.device))
        timings = self.backend.execute(env, profile)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if profile:
            self.last_timings = tuple(TaskTiming(t.task, self.stream_ids[t.stream], self.rank, t.start_us, t.end_us)
                                      for t in timings)
        out: dict[str, dict[str, np.ndarray]] = {}
        for tenant in self.graph.tenants:
            for own, name in tenant.outputs:
                if name in env:
                    out.setdefault(tenant.name, {})[own] = to_numpy(env[name])
        return out

    def comm_ms(self) -> float:
        """Milliseconds the communication thread spent in torch.distributed calls in the last
        CPU run (0 on CUDA, where calls only enqueue)."""
        timings = self.comm.timings if isinstance(self.comm, CpuComm) else []
        return sum(end - start for _, start, end in timings) / 1e6

    def close(self) -> None:
        self.backend.close()
        if isinstance(self.comm, CpuComm):
            self.comm.close()


def pin_cpu_rank(local_rank: int, local_world: int) -> int:
    """Pin this process to its share of the cores it may use (rank ``local_rank`` of
    ``local_world`` on this machine, as a CPU plan assumes: ``cores // n`` each); the
    number of cores it keeps."""
    if not hasattr(os, "sched_getaffinity"):
        return os.cpu_count() or 1
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // max(1, local_world))
    start = (local_rank * share) % len(cores)
    mine = cores[start:start + share] or cores[:share]
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))
    return len(mine)

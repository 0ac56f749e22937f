"""CUDA backend: one ``torch.cuda.Stream`` per plan stream, issued from one host thread.

Tasks are issued in the plan's ``issue_order`` (interleaved across streams by predicted
start), which the verifier proved issues every event record before any wait on it (a CUDA
wait on a never-recorded event is a no-op, so order matters). Plan streams fork from the
caller's current stream (where inputs were copied) and join back into it. A tensor freed on
a stream other than the one that allocated it is ``record_stream``-ed first, so the caching
allocator does not hand its memory out while the freeing stream may still read it.

With ``cuda_graph=True`` the first run warms up eagerly, then captures the whole
multi-stream plan into one CUDA graph (streams fork from and join into the capture stream
through events) with static input buffers; later runs copy inputs in and replay. Nothing
is freed during capture: the graph's private pool keeps every intermediate alive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from cosched.codegen.plan import Plan
from cosched.errors import ConfigError, DeviceError, RuntimeFailure
from cosched.runtime.executor import Backend, TaskProgram
from cosched.runtime.trace import TaskTiming

__all__ = ["CudaBackend"]


@dataclass(frozen=True)
class _Step:
    program: TaskProgram
    stream: int
    waits: tuple[int, ...]
    record: int | None
    cross_frees: frozenset[str]


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self, plan: Plan, programs: Mapping[int, TaskProgram], device: torch.device,
                 *, cuda_graph: bool = False) -> None:
        if not torch.cuda.is_available():
            raise DeviceError("the plan targets CUDA, but torch sees no CUDA device here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"plan targets {device}, but only {torch.cuda.device_count()} CUDA device(s) exist")
        self.plan = plan
        self.device = device
        self.use_graph = cuda_graph
        self.streams = [torch.cuda.Stream(device=device, priority=s.priority) for s in plan.streams]
        self.events = [torch.cuda.Event() for _ in plan.events]
        self.steps = _steps(plan, programs)
        self.input_names = tuple(b.tensor for b in plan.inputs)
        self.output_names = tuple(b.tensor for b in plan.outputs)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_inputs: dict[str, torch.Tensor] = {}
        self._static_outputs: dict[str, torch.Tensor] = {}

    def execute(self, env: dict[str, torch.Tensor], profile: bool = False) -> tuple[TaskTiming, ...]:
        if self.use_graph:
            if profile:
                raise ConfigError("profiling needs eager launches; run without cuda_graph to profile")
            self._replay(env)
            return ()
        with torch.cuda.device(self.device), torch.inference_mode():
            main = torch.cuda.current_stream(self.device)
            timing = self._issue(env, main, free=True, profile=profile)
            if not profile:
                return ()
            torch.cuda.synchronize(self.device)
            base, marks = timing
            return tuple(
                TaskTiming(t, s, self.device.index or 0, base.elapsed_time(a) * 1e3, base.elapsed_time(b) * 1e3)
                for t, s, a, b in marks
            )

    def _issue(self, env: dict[str, torch.Tensor], main: torch.cuda.Stream, *, free: bool,
               profile: bool) -> tuple[torch.cuda.Event, list[tuple[int, int, torch.cuda.Event, torch.cuda.Event]]]:
        fork = torch.cuda.Event(enable_timing=profile)
        fork.record(main)
        for stream in self.streams:
            stream.wait_event(fork)
        marks = []
        for step in self.steps:
            stream = self.streams[step.stream]
            with torch.cuda.stream(stream):
                for e in step.waits:
                    stream.wait_event(self.events[e])
                if profile:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record(stream)
                step.program(env)
                if profile:
                    end.record(stream)
                    marks.append((step.program.id, step.stream, start, end))
                if step.record is not None:
                    self.events[step.record].record(stream)
                if free:
                    for name in step.program.frees:
                        tensor = env.pop(name, None)
                        if tensor is not None and name in step.cross_frees:
                            tensor.record_stream(stream)
        for stream in self.streams:
            join = torch.cuda.Event()
            join.record(stream)
            main.wait_event(join)
        return fork, marks

    def _replay(self, env: dict[str, torch.Tensor]) -> None:
        with torch.cuda.device(self.device), torch.inference_mode():
            if self._graph is None:
                self._capture(env)
            for name in self.input_names:
                self._static_inputs[name].copy_(env[name])
            assert self._graph is not None
            self._graph.replay()
            for name in self.output_names:
                env[name] = self._static_outputs[name]

    def _capture(self, env: dict[str, torch.Tensor]) -> None:
        self._static_inputs = {name: env[name].clone() for name in self.input_names}
        warm = dict(env)
        self._issue(warm, torch.cuda.current_stream(self.device), free=True, profile=False)
        torch.cuda.synchronize(self.device)
        captured = dict(env)
        captured.update(self._static_inputs)
        graph = torch.cuda.CUDAGraph()
        capture_stream = torch.cuda.Stream(device=self.device)
        capture_stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.graph(graph, stream=capture_stream):
                self._issue(captured, capture_stream, free=False, profile=False)
        except RuntimeFailure as exc:
            raise RuntimeFailure(f"capturing the plan into a CUDA graph failed: {exc}") from exc
        except RuntimeError as exc:
            raise RuntimeFailure(
                f"capturing the plan into a CUDA graph failed ({exc}); run with cuda_graph=False"
            ) from exc
        torch.cuda.current_stream(self.device).wait_stream(capture_stream)
        self._static_outputs = {name: captured[name] for name in self.output_names}
        self._graph = graph

    def close(self) -> None:
        self._graph = None
        self._static_inputs.clear()
        self._static_outputs.clear()


def _steps(plan: Plan, programs: Mapping[int, TaskProgram]) -> list[_Step]:
    """Per task in issue order: its stream, the events it waits for and the one it records."""
    stream_of = plan.stream_of_task()
    producer_stream = {b.tensor: stream_of[b.def_task] for b in plan.buffers}
    waits: dict[int, list[int]] = {}
    records: dict[int, int] = {}
    for s in plan.streams:
        pending: list[int] = []
        last: int | None = None
        for ins in s.instructions:
            if ins.op == "wait":
                pending.append(ins.event)  # type: ignore[arg-type]
            elif ins.op == "run":
                waits[ins.task], pending, last = pending, [], ins.task  # type: ignore[index]
            elif last is not None:
                records[last] = ins.event  # type: ignore[assignment]
    steps = []
    for t in plan.issue_order:
        program = programs[t]
        cross = frozenset(n for n in program.frees if producer_stream.get(n, program.stream) != program.stream)
        steps.append(_Step(program, stream_of[t], tuple(waits[t]), records.get(t), cross))
    return steps

"""What a backend runs: task programs, and a plan's steps interpreted on a :class:`Machine`.

The types every backend shares live here, below the backends and the executor, so that
neither imports the other:

- :class:`TaskProgram`: one task ready to run (its kernels, or their trace).
- :class:`Machine`: what gives a plan's steps meaning: ``run``, ``record``, ``wait``,
  ``free`` and (multi-device plans) ``send`` on a stream. The CPU backend's machine runs on worker threads with thread events;
  the CUDA backend's issues onto streams and events from one thread; tests record the calls.
- :class:`PlanProgram`: the per-stream programs and the one-thread issue program, each a
  callable that drives a machine. :func:`plan_program` makes them from a verified plan's
  steps (:mod:`cosched.codegen.steps`) through :func:`interpret`; the generated module's
  stream functions are the same steps written out as calls, and drive the same machines.
- :class:`Backend`: executes a :class:`PlanProgram` over an environment of tensors.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch

from cosched.codegen.plan import Plan
from cosched.codegen.steps import Step, issue_steps, segments, stream_steps
from cosched.errors import CoschedError, RuntimeFailure, UnsupportedOpError
from cosched.execution.kernels import Kernel, prepare_kernels
from cosched.execution.traced import TaskTracer
from cosched.ir.graph import Graph
from cosched.runtime.chrome_trace import TaskTiming

log = logging.getLogger(__name__)

__all__ = [
    "Aborted",
    "Backend",
    "Machine",
    "PlanProgram",
    "TaskProgram",
    "build_programs",
    "interpret",
    "plan_program",
]


class Aborted(Exception):
    """Raised in a stream (or the communication thread) that stops because another one
    failed: never the error a run reports, only the sign that it ends."""


@dataclass(frozen=True)
class TaskProgram:
    """One task ready to run: its kernels in order, and ``reads``: the tensors it reads that
    other tasks wrote (a CUDA stream records its use of each, see :mod:`cosched.runtime.cuda`).

    ``traced`` runs the task as one call instead of its kernels: its TorchScript trace
    (:mod:`cosched.execution.traced`), or the onnxruntime session of the segment it heads
    (:mod:`cosched.execution.ort`). ``covered_by`` is the head of the onnxruntime segment that
    already ran this task; running it then does nothing. ``provider`` says which ran it.
    """

    id: int
    name: str
    tenant: str
    kernels: tuple[Kernel, ...]
    reads: tuple[str, ...] = ()
    traced: Callable[[MutableMapping[str, torch.Tensor]], None] | None = None
    provider: str = "torch"
    covered_by: int | None = None

    @property
    def label(self) -> str:
        return f"task {self.id} ({self.tenant}:{self.name})"

    def run(self, env: MutableMapping[str, torch.Tensor], stream: int) -> None:
        if self.covered_by is not None:
            return
        try:
            if self.traced is not None:
                self.traced(env)
            else:
                for kernel in self.kernels:
                    kernel(env)
        except CoschedError as exc:
            raise RuntimeFailure(f"{self.label} on stream {stream} failed: {exc}") from exc
        except Exception as exc:
            raise RuntimeFailure(
                f"{self.label} on stream {stream} failed: {type(exc).__name__}: {exc}"
            ) from exc


def build_programs(graph: Graph, tracer: TaskTracer | None = None,
                   host: Mapping[str, torch.Tensor] | None = None,
                   device: torch.device | None = None, *,
                   segments: Sequence[Sequence[int]] = (), threads: int = 1,
                   constants: Mapping[str, torch.Tensor] | None = None) -> dict[int, TaskProgram]:
    """Resolve every op once; one :class:`TaskProgram` per task of ``graph``. With
    ``tracer``, each task that can be traced runs as one call; ``host`` and ``device`` are
    passed to :func:`~cosched.execution.kernels.prepare_kernels`. Each of ``segments`` (task
    ids, see :func:`cosched.codegen.steps.segments`) runs as one onnxruntime session with
    ``threads`` intra-op threads over ``constants``; a segment onnxruntime cannot load runs
    as torch tasks instead (logged; ``provider`` then says ``"torch"``)."""
    from cosched.execution.ort import shared_segment  # local: it brings in onnx

    kernels = {k.op.name: k for k in prepare_kernels(graph.ops, host=host, device=device)}
    task_of = {name: t.id for t in graph.tasks for op in t.ops for name in graph.op(op).outputs}
    heads: dict[int, Callable[[MutableMapping[str, torch.Tensor]], None]] = {}
    covered: dict[int, int] = {}
    for segment in segments:
        try:
            heads[segment[0]] = shared_segment(graph, segment, threads, constants or {})
        except UnsupportedOpError as exc:
            log.warning("%s; these tasks run on torch kernels", exc)
            continue
        covered.update((t, segment[0]) for t in segment[1:])
    programs = {}
    for t in graph.tasks:
        ks = tuple(kernels[name] for name in t.ops)
        reads = tuple(sorted({n for k in ks for n in k.op.inputs
                              if n and task_of.get(n, t.id) != t.id}))
        if t.id in heads or t.id in covered:
            programs[t.id] = TaskProgram(t.id, t.name or t.ops[0], t.tenant, ks, reads, heads.get(t.id),
                                         "ort", covered.get(t.id))
            continue
        traced = tracer.trace(graph, t, ks) if tracer is not None else None
        programs[t.id] = TaskProgram(t.id, t.name or t.ops[0], t.tenant, ks, reads, traced)
    return programs


class Machine(Protocol):
    """Gives a plan's steps their meaning on one device (see the module docstring)."""

    def run(self, stream: int, task: int) -> None: ...

    def record(self, stream: int, event: int) -> None: ...

    def wait(self, stream: int, event: int) -> None: ...

    def free(self, stream: int, tensors: tuple[str, ...]) -> None: ...

    def send(self, stream: int, task: int, peer: int) -> None:
        """Post the input of transfer ``task`` to device ``peer`` (multi-device plans only)."""


def interpret(steps: Sequence[Step], machine: Machine) -> None:
    """Drive ``machine`` through ``steps`` in order: the one interpreter of plan steps."""
    for step in steps:
        if step.op == "run":
            machine.run(step.stream, step.task)  # type: ignore[arg-type]
        elif step.op == "wait":
            machine.wait(step.stream, step.event)  # type: ignore[arg-type]
        elif step.op == "record":
            machine.record(step.stream, step.event)  # type: ignore[arg-type]
        elif step.op == "send":
            machine.send(step.stream, step.task, step.peer)  # type: ignore[arg-type]
        else:
            machine.free(step.stream, step.tensors)


Program = Callable[[Machine], None]


@dataclass(frozen=True)
class PlanProgram:
    """A plan ready for a backend: ``streams[i]`` drives a machine through stream ``i``'s
    steps, ``issue`` through every stream's steps in one-thread issue order. ``recorders``
    maps each event to the task it is recorded after (for error messages). ``segments`` are
    the runs of tasks onnxruntime executes as one session each
    (:func:`cosched.codegen.steps.segments`)."""

    streams: tuple[Program, ...]
    issue: Program
    num_events: int
    priorities: tuple[int, ...]
    recorders: Mapping[int, int]
    segments: tuple[tuple[int, ...], ...] = ()


def plan_program(plan: Plan) -> PlanProgram:
    """The programs of a verified plan, interpreting its steps."""
    return PlanProgram(
        streams=tuple(partial(interpret, steps) for steps in stream_steps(plan)),
        issue=partial(interpret, issue_steps(plan)),
        num_events=len(plan.events),
        priorities=tuple(s.priority for s in plan.streams),
        recorders={e.id: e.after_task for e in plan.events},
        segments=segments(plan),
    )


class Backend(ABC):
    """Executes a :class:`PlanProgram` over an environment of tensors; one implementation
    per device kind.

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

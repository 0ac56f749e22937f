"""One rank's communication: a multi-device plan's transfers and collectives on torch.distributed.

A multi-device plan (schema version 2) puts a communication task wherever a tensor crosses
devices (:class:`cosched.codegen.planmulti.CommTask`): a ``transfer`` runs on its destination
and its source posts a ``send`` right after the tensor's producer; a collective has one task
per device of its group. Each rank turns the ones it takes part in into :class:`CommStep` s
(:func:`comm_steps`) and runs them **in one order that every rank keeps**: by position in the
plan's one issue sequence (:func:`cosched.codegen.steps.issue_steps`), a transfer at its
``send`` or its receiving run, whichever comes first, a collective at the first of its tasks.
Inputs of a step come before that position and its results are read after it, so every rank can post its steps in that order without
waiting on a step that comes later, and blocking point-to-point and collective calls never
deadlock. The same order serves NCCL, which matches sends and receives in issue order.

- On CPU (:class:`CpuComm`), a communication thread per rank walks the steps: each waits
  until its input's producer has run (the stream tells it, :meth:`CpuComm.produced`), then
  calls torch.distributed (gloo). The stream running a communication task waits for its
  result. Compute on other streams, and on this stream up to that task, overlaps.
- On CUDA (:class:`CudaComm`), the rank's one issuing thread meets each step at its place
  in the order and issues it on a communication stream (NCCL).

Both take a ``run_step(step, value)`` that does one step: in a distributed process
:class:`cosched.runtime.transport.TorchTransport`, the only place that calls
torch.distributed; in tests an in-memory stand-in.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import torch

from cosched.codegen.plan import Plan
from cosched.codegen.steps import Step, issue_steps, segments, stream_steps
from cosched.errors import PlanError, RuntimeFailure
from cosched.ir.graph import Graph
from cosched.runtime.program import Aborted, Machine, PlanProgram, interpret

__all__ = ["CommStep", "CpuComm", "CudaComm", "RunStep", "comm_steps", "rank_program"]

CommKind = Literal["send", "recv", "all_reduce", "all_gather", "all_to_all"]
POLL_S = 0.05


@dataclass(frozen=True)
class CommStep:
    """What one rank does for one communication task, at ``key`` in the order all ranks keep.

    ``source`` is the local tensor sent or reduced (None for a receive) and ``producer`` the
    local task after whose run it exists (None: bound before the run, an input or weight);
    ``output`` the tensor the task writes here (None for a send). ``peers``: the destination
    of a send, the source of a receive, or a collective's device ranks by group rank, of
    which this device is ``index``. ``shapes``: every group rank's input shape (the one
    tensor's for a transfer); ``axis`` that of all-gather and all-to-all.
    """

    key: int
    task: int
    kind: CommKind
    label: str
    source: str | None
    output: str | None
    peers: tuple[int, ...]
    index: int
    shapes: tuple[tuple[int, ...], ...]
    dtype: str
    axis: int = 0
    producer: int | None = None

    op = "comm"

    def describe(self) -> str:
        if self.kind == "send":
            return f"{self.label}: send to rank {self.peers[0]}"
        if self.kind == "recv":
            return f"{self.label}: receive from rank {self.peers[0]}"
        return f"{self.label}: {self.kind} with ranks {', '.join(map(str, self.peers))}"


def comm_steps(plan: Plan, graph: Graph, rank: int) -> tuple[CommStep, ...]:
    """The communication steps of device ``rank``, in the order every rank keeps (see the
    module docstring). A transfer within one device is no step: its task copies locally."""
    sequence = issue_steps(plan)
    run_at = {s.task: i for i, s in enumerate(sequence) if s.op == "run"}
    send_at = {s.task: i for i, s in enumerate(sequence) if s.op == "send"}
    device_of = plan.device_of_task()
    steps: list[CommStep] = []
    groups: dict[str, list[Any]] = defaultdict(list)
    for c in plan.comms:
        task = graph.task(c.task)
        op = graph.op(task.ops[0])
        label = f"task {c.task} ({task.tenant}:{task.name or op.name})"
        if c.op != "transfer":
            groups[c.group].append((c, op, label))
            continue
        src, dst = int(c.peers[0]), int(c.peers[1])
        if src == dst or rank not in (src, dst):
            continue
        x, y = op.inputs[0], op.outputs[0]
        info = graph.tensor(x)
        if c.task not in send_at:
            raise PlanError(f"{label}: the plan has no send of its input on device {src}")
        key = min(send_at[c.task], run_at[c.task])  # the receiving run may be issued before the send
        if rank == src:
            steps.append(CommStep(key, c.task, "send", label, x, None, (dst,), 0, (info.shape,),
                                  info.dtype, producer=_producer(graph, x, device_of, rank, label)))
        else:
            steps.append(CommStep(key, c.task, "recv", label, None, y, (src,), 0, (info.shape,), info.dtype))
    for parts in groups.values():
        key = min(run_at[c.task] for c, _, _ in parts)
        for c, op, label in parts:
            if device_of[c.task] != rank:
                continue
            index = int(c.rank or 0)
            x = op.inputs[index]
            info = graph.tensor(x)
            shapes = tuple(graph.tensor(i).shape for i in op.inputs)
            steps.append(CommStep(key, c.task, c.op, label, x, op.outputs[0], tuple(int(p) for p in c.peers), index,
                                  shapes, info.dtype, int(op.attr("axis", 0)),
                                  producer=_producer(graph, x, device_of, rank, label)))
    for s in steps:  # a plan lowering did not write could order a producer after its step
        if s.producer is not None and run_at[s.producer] >= s.key:
            raise PlanError(f"{s.describe()}: its input's producer, task {s.producer}, is issued after it; "
                            "the plan's issue order is not one every rank can keep (recompile the plan)")
    return tuple(sorted(steps, key=lambda s: (s.key, s.task)))


def _producer(graph: Graph, tensor: str, device_of: Mapping[int, int], rank: int, label: str) -> int | None:
    op = graph.producer(tensor)
    if op is None:
        return None
    task = graph.task_of(op.name).id
    if device_of[task] != rank:
        raise PlanError(f"{label}: its input {tensor!r} is produced by task {task} on device {device_of[task]}, "
                        f"not on device {rank} where it is sent from")
    return task


def rank_program(plan: Plan, rank: int, steps: Sequence[CommStep]) -> tuple[PlanProgram, tuple[int, ...]]:
    """The program of device ``rank``: its streams' steps renumbered ``0..k-1`` (events too),
    and an issue sequence holding ``steps`` at their places; also the plan's stream id of
    each local stream."""
    streams = [s for s in plan.streams if s.device == rank]
    local_stream = {s.id: i for i, s in enumerate(streams)}
    events = [e for e in plan.events if e.stream in local_stream]
    local_event = {e.id: j for j, e in enumerate(events)}

    def local(step: Step) -> Step:
        event = None if step.event is None else local_event[step.event]
        return replace(step, stream=local_stream[step.stream], event=event)

    per_stream = [tuple(local(s) for s in stream) for stream, plan_stream in zip(stream_steps(plan), plan.streams,
                                                                                 strict=True)
                  if plan_stream.device == rank]
    pending = sorted(steps, key=lambda s: (s.key, s.task))
    sequence: list[Step | CommStep] = []
    i = 0
    for position, step in enumerate(issue_steps(plan)):
        while i < len(pending) and pending[i].key <= position:
            sequence.append(pending[i])
            i += 1
        if step.stream in local_stream:
            sequence.append(local(step))
    sequence += pending[i:]
    mine = {t for s in streams for t in s.tasks}
    program = PlanProgram(
        streams=tuple(partial(interpret, s) for s in per_stream),
        issue=partial(_interpret_rank, tuple(sequence)),
        num_events=len(events),
        priorities=tuple(s.priority for s in streams),
        recorders={local_event[e.id]: e.after_task for e in events},
        segments=tuple(seg for seg in segments(plan) if seg[0] in mine),
    )
    return program, tuple(s.id for s in streams)


def _interpret_rank(sequence: Sequence[Step | CommStep], machine: Machine) -> None:
    for item in sequence:
        if isinstance(item, CommStep):
            machine.communicate(item)  # type: ignore[attr-defined]
        else:
            interpret((item,), machine)


class _Round:
    """One run's state of a :class:`CpuComm`."""

    def __init__(self, steps: Sequence[CommStep], abort: threading.Event) -> None:
        self.abort = abort
        self.ready = {s.task: threading.Event() for s in steps}
        self.done = {s.task: threading.Event() for s in steps}
        self.values: dict[int, torch.Tensor] = {}
        self.results: dict[int, torch.Tensor | None] = {}
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.timings: list[tuple[int, int, int]] = []


RunStep = Callable[[CommStep, torch.Tensor | None], torch.Tensor | None]


class _Steps:
    """A rank's steps, indexed: ``tasks`` (those whose run waits for a result), by task and by
    the local task that produces their input."""

    def __init__(self, steps: Sequence[CommStep], run_step: RunStep) -> None:
        self.steps = tuple(steps)
        self.run_step = run_step
        self.tasks = frozenset(s.task for s in self.steps if s.kind != "send")
        self._by_task = {s.task: s for s in self.steps}
        self._by_producer: dict[int, list[CommStep]] = defaultdict(list)
        for s in self.steps:
            if s.producer is not None:
                self._by_producer[s.producer].append(s)


class CpuComm(_Steps):
    """A CPU rank's communication thread (see the module docstring); the hooks of
    :class:`cosched.runtime.cpu.StreamComm`. ``run_step(step, value)`` does one step
    (:meth:`cosched.runtime.transport.TorchTransport.run`), ``finish()`` after the last one waits for what they posted
    (:meth:`~cosched.runtime.transport.TorchTransport.finish`); a wait longer than ``timeout_s`` fails the run, naming
    the step. ``timings`` after a run: (task, start ns, end ns) of each step."""

    def __init__(self, steps: Sequence[CommStep], run_step: RunStep, *, timeout_s: float = 60.0,
                 finish: Callable[[], None] | None = None) -> None:
        super().__init__(steps, run_step)
        self.finish = finish
        self.timeout_s = timeout_s
        self._round: _Round | None = None
        self._inbox: list[_Round] = []
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="cosched-comm", daemon=True)
        self._thread.start()

    @property
    def timings(self) -> list[tuple[int, int, int]]:
        return list(self._round.timings) if self._round is not None else []

    # -- the hooks, called by the streams
    def begin(self, env: dict[str, torch.Tensor], abort: threading.Event) -> None:
        state = _Round(self.steps, abort)
        for s in self.steps:
            if s.source is None:  # a receive: ready to post at once
                state.ready[s.task].set()
            elif s.producer is None:
                if s.source not in env:
                    raise RuntimeFailure(f"{s.describe()}: its input {s.source!r} is not bound on this rank")
                state.values[s.task] = env[s.source]
                state.ready[s.task].set()
        self._round = state
        with self._wake:
            self._inbox.append(state)
            self._wake.notify()

    def produced(self, task: int, env: dict[str, torch.Tensor]) -> None:
        state = self._round
        for s in self._by_producer.get(task, ()):
            assert state is not None and s.source is not None
            state.values[s.task] = env[s.source]  # held here: a later free on the stream cannot drop it
            state.ready[s.task].set()

    def consume(self, task: int, env: dict[str, torch.Tensor]) -> None:
        state, step = self._round, self._by_task[task]
        assert state is not None
        deadline = time.monotonic() + self.timeout_s
        while not state.done[task].wait(POLL_S):
            if state.abort.is_set():
                raise Aborted
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"{step.describe()}: waited {self.timeout_s:g} s for its communication and "
                                     "gave up")
        if step.output is not None:
            result = state.results.pop(task)
            assert result is not None
            env[step.output] = result

    def end(self) -> BaseException | None:
        """Wait for the thread to finish the run's steps; the error that stopped it, if any.
        After a stream failed it waits a moment only: the thread may be blocked in a call
        that a peer will never answer, and the failing rank is about to exit."""
        state = self._round
        if state is None:
            return None
        limit = 1.0 if state.abort.is_set() else self.timeout_s + 5.0
        if not state.finished.wait(limit):
            if state.abort.is_set():
                return Aborted()
            return RuntimeFailure(f"the communication thread did not finish within {limit:g} s")
        return state.error

    def close(self) -> None:
        with self._wake:
            self._inbox.append(None)  # type: ignore[arg-type]
            self._wake.notify()

    # -- the thread
    def _loop(self) -> None:
        torch.set_num_threads(1)  # per thread in torch: no OpenMP team of its own beside the streams'
        while True:
            with self._wake:
                while not self._inbox:
                    self._wake.wait()
                state = self._inbox.pop(0)
            if state is None:
                return
            try:
                self._walk(state)
            except BaseException as exc:  # reported by end(), and every stream stops
                state.error = exc
                state.abort.set()
            finally:
                state.finished.set()

    def _walk(self, state: _Round) -> None:
        self._steps(state)
        if self.finish is not None:
            self.finish()

    def _steps(self, state: _Round) -> None:
        for step in self.steps:
            deadline = time.monotonic() + self.timeout_s
            while not state.ready[step.task].wait(POLL_S):
                if state.abort.is_set():
                    raise Aborted
                if time.monotonic() > deadline:
                    raise RuntimeFailure(f"{step.describe()}: its input {step.source!r} was not computed within "
                                         f"{self.timeout_s:g} s")
            if state.abort.is_set():
                raise Aborted
            start = time.perf_counter_ns()
            try:
                result = self.run_step(step, state.values.pop(step.task, None))
            except Aborted:
                raise
            except Exception as exc:
                raise RuntimeFailure(f"{step.describe()} failed: {peer_error(exc)}") from exc
            state.timings.append((step.task, start, time.perf_counter_ns()))
            state.results[step.task] = result
            state.done[step.task].set()


def peer_error(exc: BaseException) -> str:
    """What a torch.distributed error says, in one line: a peer that went away is named so."""
    text = " ".join(str(exc).split())
    if "Connection closed by peer" in text or "Connection reset" in text or "Broken pipe" in text:
        return f"a peer rank is gone ({type(exc).__name__}: {text[:200]})"
    if "Timed out" in text or "timed out" in text or "Timeout" in text:
        return f"a peer rank did not answer in time ({type(exc).__name__}: {text[:200]})"
    return f"{type(exc).__name__}: {text[:300]}"


class CudaComm(_Steps):
    """A CUDA rank's communication, issued on one communication stream (see the module
    docstring); the hooks of :class:`cosched.runtime.cuda.IssueComm`. Every CUDA call goes
    through the backend's :class:`cosched.runtime.cuda.TorchCuda` (``api`` of :meth:`begin`).
    A blocking NCCL call runs after the work of the stream current when it is made, and makes
    that stream wait for its result; each step is issued with the communication stream current:

    - :meth:`begin`: the communication stream waits for ``main`` (where inputs were copied);
    - :meth:`produced`: right after a producer's run is issued, an event on its stream;
    - :meth:`issue`: the communication stream waits for that event, keeps the input from
      reuse (``record_stream``), calls torch.distributed, and records a done event;
    - :meth:`consume`: the task's stream waits for the done event and keeps the result;
    - :meth:`end`: ``main`` waits for the communication stream (also after a failure).
    """

    def __init__(self, steps: Sequence[CommStep], run_step: RunStep, device: torch.device) -> None:
        super().__init__(steps, run_step)
        self.device = device
        self.stream: Any = None
        self._api: Any = None
        self._main: Any = None
        self._env: dict[str, torch.Tensor] = {}
        self._values: dict[int, torch.Tensor] = {}
        self._ready: dict[int, Any] = {}
        self._done: dict[int, Any] = {}
        self._results: dict[int, torch.Tensor | None] = {}

    def begin(self, env: dict[str, torch.Tensor], api: Any, main: Any) -> None:
        if self.stream is None or api is not self._api:
            self.stream = api.new_stream()
        api.wait_stream(self.stream, main)  # inputs were copied in on the caller's stream
        self._api, self._main, self._env = api, main, env
        self._values = {}
        for s in self.steps:
            if s.source is not None and s.producer is None:
                if s.source not in env:
                    raise RuntimeFailure(f"{s.describe()}: its input {s.source!r} is not bound on this rank")
                self._values[s.task] = env[s.source]
        self._ready, self._done, self._results = {}, {}, {}

    def produced(self, task: int, stream: int) -> None:
        waiting = self._by_producer.get(task)
        if not waiting:
            return
        event = self._api.record_event(self._api.streams[stream])
        for s in waiting:
            assert s.source is not None
            self._values[s.task] = self._env[s.source]  # held here: a later free cannot drop it
            self._ready[s.task] = event

    def issue(self, step: CommStep) -> None:
        api = self._api
        with api.use(self.stream):
            if step.producer is not None:
                if step.task not in self._ready:
                    raise RuntimeFailure(f"{step.describe()}: issued before task {step.producer}, which computes "
                                         f"its input {step.source!r}; the rank's issue order is broken")
                api.wait_event(self.stream, self._ready.pop(step.task))
            value = self._values.pop(step.task, None)
            if value is not None:
                api.keep_for(value, self.stream)  # not reused while the communication reads it
            try:
                self._results[step.task] = self.run_step(step, value)
            except Exception as exc:
                raise RuntimeFailure(f"{step.describe()} failed: {peer_error(exc)}") from exc
            self._done[step.task] = api.record_event(self.stream)

    def consume(self, task: int, stream: int, env: dict[str, torch.Tensor]) -> None:
        step = self._by_task[task]
        if task not in self._done:
            raise RuntimeFailure(f"{step.describe()}: run before its communication was issued")
        plan_stream = self._api.streams[stream]
        self._api.wait_event(plan_stream, self._done.pop(task))
        result = self._results.pop(task)
        if step.output is not None and result is not None:
            self._api.keep_for(result, plan_stream)  # allocated on the communication stream
            env[step.output] = result

    def end(self) -> None:
        if self.stream is not None and self._main is not None:
            self._api.wait_stream(self._main, self.stream)
        self._main = None
